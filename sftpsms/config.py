"""Settings: one object built from CLI flags and SFTPSMS_* environment variables, passed down."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from sftpsms import folders

ENV_PREFIX = "SFTPSMS_"


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path("var")
    store: str = ""  # the event store: a postgresql:// URL (several nodes), or empty for SQLite in data_dir
    # This node's name among several sharing one store and data directory (PostgreSQL only): its own
    # state (read models, history, simulator journal) lives in data_dir/nodes/<node>. Default: the host name.
    node: str = ""
    sftp_host: str = "127.0.0.1"
    sftp_port: int = 2222
    ftp_port: int = -1  # -1: no FTP door; 0: any free port
    ftp_certfile: str = ""  # PEM certificate (and key, or ftp_keyfile): explicit FTPS required
    ftp_keyfile: str = ""
    # FTP passive data ports come from this small range (open it in the firewall); "" lets the
    # kernel pick any ephemeral port. The connection limits are the doors' shared ones below.
    ftp_passive_ports: str = "60000-60099"
    # After an FTP upload's data ended, how long a control connection lost still means "cut off"
    # (a killed client closes both at once); each whole upload's 226 waits this long.
    ftp_cutoff_grace: float = 0.05
    sweep_interval: float = 5.0  # seconds between sweeps of Send_SMS (PRODUCT.md §2)
    incomplete_upload_timeout: float = 24 * 3600.0  # a cut-off upload is filed as File.Corrupt after
    file_workers: int = 2  # files processed at once
    pass_one_processes: int = 2  # processes validating one big file (1: a thread of the server only)
    file_time_budget: float = 900.0  # seconds pass 1 of one file may take; past it the attempt fails
    file_max_failures: int = 2  # failed attempts (raised, over budget, crashed) before a file is quarantined
    work_retry_interval: float = 10.0  # seconds between looks at work/ for files to resume (a full disk, ...)
    # Several nodes (a PostgreSQL store): seconds between looks at work/ for files whose node died
    # (their lease is free), so another node takes them over; files this node left are tried again
    # every work_retry_interval only.
    takeover_interval: float = 2.0
    max_parts: int = 10  # a message longer than this many SMS parts is a contact error
    # Limits on an uploaded file (sftpsms.limits.Limits, PRODUCT.md §7); over one: File.Corrupt or
    # File.ParseError with a detail naming the field.
    max_file_bytes: int = 256 << 20  # an upload: refused by the doors while written past it, and checked when processing starts (a zip's entries too)
    max_json_depth: int = 32  # nesting of objects and arrays (the format needs 4)
    max_string_bytes: int = 64 << 10  # any string or key, as written in the file
    max_number_chars: int = 64  # any JSON number, as written
    max_keys_per_object: int = 256  # the file's object, a contact, a contact's values
    max_contact_bytes: int = 1 << 20  # one contact
    max_contacts: int = 2_000_000  # contacts per file
    max_zip_entries: int = 100
    max_entry_bytes: int = 256 << 20  # uncompressed, per zip entry (counted while extracting)
    max_zip_bytes: int = 512 << 20  # uncompressed, all entries of one zip
    max_zip_ratio: int = 200  # uncompressed / compressed, per entry
    max_account_unzip_bytes: int = 1 << 30  # an account's Processed + Errors, beyond which no zip is expanded
    send_rate: float = 100.0  # SMS parts per second, the whole service
    account_rate: float = 50.0  # SMS parts per second, per account
    simulator_seed: int = 7
    simulator_delivery_delay: float = 0.5  # seconds until the simulator's delivery receipt
    mail_from: str = "sftpsms@localhost"
    smtp_host: str = ""  # empty: status emails go to the outbox folder as .eml files
    smtp_port: int = 25
    smtp_starttls: bool = False
    smtp_user: str = ""
    smtp_password: str = ""
    smtp_timeout: float = 10.0
    login_slowdown_after: int = 3  # failed logins (per address and username) before answers slow down
    login_lockout_after: int = 10  # failed logins that lock out one (address, username) pair
    login_address_lockout_after: int = 50  # failed logins (any usernames) that lock out an address
    login_lockout_seconds: float = 900.0  # also how long failures are remembered
    login_slowdown_base: float = 0.5  # seconds; doubles with each further failure, at most 8 s
    login_user_max_delay: float = 1.0  # the most that failures from other addresses slow a username
    # ---- the doors' connection limits (SFTP and FTP share the counts) ----
    max_connections: int = 256  # connections at once, all doors
    max_connections_per_address: int = 16
    max_connections_per_account: int = 16
    login_grace_seconds: float = 30.0  # a connection that has not logged in by then is closed
    idle_timeout: float = 600.0  # seconds without a request before a logged-in connection is closed
    max_open_files: int = 64  # open file handles per connection
    password_checks: int = 2  # argon2 checks at once (64 MiB each)
    password_check_queue: int = 64  # logins waiting for a check; past this, refused as busy
    notify_attempts: int = 6  # SMTP tries per email before NotificationFailed
    notify_backoff: float = 2.0  # seconds before the first retry; doubles each time
    gateways_file: str = ""  # TOML file of gateways (sftpsms.gateways); default <data_dir>/gateways.toml
    default_gateway: str = "simulator"  # numbers no route names a gateway for go here
    http_host: str = "127.0.0.1"  # the inbound HTTP endpoint (gateway receipts and replies)
    http_port: int = -1  # -1: no inbound HTTP endpoint; 0: any free port
    optout_keywords: str = "STOP,STOPALL,UNSUBSCRIBE,CANCEL,END,QUIT"  # a reply starting with one opts out
    webhook_backoff: float = 5.0  # seconds before a failed webhook POST is retried; doubles each time
    webhook_backoff_max: float = 3600.0  # the longest wait between two tries
    webhook_retry_for: float = 24 * 3600.0  # seconds after the first try when a POST is given up (WebhookFailed)
    webhook_timeout: float = 10.0  # seconds for one POST (connect, send, response)
    webhook_concurrency: int = 16  # POSTs in flight at once per webhook URL
    # Delivery receipts (issue 9, defect 5): a message without a final status once its gateway's
    # validity period (gateways file, `validity`) has passed is marked expired; looked for this often.
    expiry_interval: float = 60.0  # seconds between looks for messages past their validity period
    simulator_remember: int = 100_000  # message ids the simulator remembers to de-duplicate re-submissions

    @classmethod
    def from_env(cls, **overrides: Any) -> Settings:
        """Defaults, then SFTPSMS_* variables, then explicit (CLI) overrides that are not None."""
        values: dict[str, Any] = {}
        for spec in fields(cls):
            raw = os.environ.get(ENV_PREFIX + spec.name.upper())
            if raw is not None:
                values[spec.name] = _convert(spec.type, raw)
        values.update({key: value for key, value in overrides.items() if value is not None})
        if "data_dir" in values:
            values["data_dir"] = Path(values["data_dir"])
        return replace(cls(), **values)

    # ---- the data directory's layout --------------------------------------------------------

    @property
    def events_db(self) -> Path:
        return self.data_dir / "events.db"

    @property
    def node_name(self) -> str:
        """This node's name: `node`, else the host name (letters, digits, `.`, `_`, `-` kept)."""
        raw = self.node or socket.gethostname() or "node"
        return "".join(c if c.isalnum() or c in "._-" else "_" for c in raw)[:64] or "node"

    @property
    def local_dir(self) -> Path:
        """What one node keeps for itself. On SQLite (one node) the data directory itself; on a
        shared PostgreSQL store data_dir/nodes/<node>, so nodes sharing the folder tree never
        write one another's SQLite files."""
        if not self.store:
            return self.data_dir
        return self.data_dir / "nodes" / self.node_name

    @property
    def readmodels_db(self) -> Path:
        return self.local_dir / "readmodels.db"

    @property
    def history_db(self) -> Path:
        """The message-level history (eventstore.history), followed from the log off the hot path."""
        return self.local_dir / "history.db"

    @property
    def webhooks_db(self) -> Path:
        """The webhook sender's position in the notification log and what it settled past it (one
        node; on a PostgreSQL store it is kept in the store, eventstore/webhook_tracking.py)."""
        return self.data_dir / "webhooks.db"

    @property
    def accounts_dir(self) -> Path:
        return self.data_dir / "accounts"

    def account_root(self, username: str) -> Path:
        """The account's folder; raises `names.BadName` for a name that would reach outside
        `accounts_dir` (`..`, a separator: an old store may hold one) or whose folder is a link."""
        return folders.account_root(self.accounts_dir, username)

    @property
    def work_dir(self) -> Path:
        """Files being processed, by file id: frozen copies the client can no longer change."""
        return self.data_dir / "work"

    @property
    def spool_dir(self) -> Path:
        return self.data_dir / "spool"

    @property
    def outbox_dir(self) -> Path:
        return self.data_dir / "outbox"

    @property
    def host_key(self) -> Path:
        return self.data_dir / "ssh_host_ed25519_key"

    @property
    def gateways_path(self) -> Path:
        return Path(self.gateways_file) if self.gateways_file else self.data_dir / "gateways.toml"

    @property
    def optout_words(self) -> tuple[str, ...]:
        return tuple(word.strip().upper() for word in self.optout_keywords.split(",") if word.strip())

    @property
    def simulator_dir(self) -> Path:
        return self.local_dir / "simulator"


def _convert(kind: Any, raw: str) -> Any:
    name = kind if isinstance(kind, str) else getattr(kind, "__name__", str(kind))
    if name == "int":
        return int(raw)
    if name == "float":
        return float(raw)
    if name == "bool":
        return raw.strip().lower() in ("1", "true", "yes", "on")
    if name == "Path":
        return Path(raw)
    return raw
