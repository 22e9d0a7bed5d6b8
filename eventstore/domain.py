"""Aggregates and their events: accounts, routes, file names, files, contact batches, dispatch logs.

Rules for this module (house rule 6): events are facts named in the past tense, their fields are
JSON-friendly (str, int, bool, lists, dicts; times as ISO-8601 strings), ids are uuid5 values derived
from business keys, and `apply` bodies never read a clock, randomness or I/O, because they re-run on
every replay. Public methods validate and compute; events only record.
"""

from __future__ import annotations

from datetime import datetime
from hashlib import sha1
from typing import Any
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate

NAMESPACE = UUID("6f1c1a52-5b0e-4d8e-9a53-2f3f0c6c8e11")
# How an opted-out contact appears among a batch's errors (PRODUCT.md's MSISDN.Optout).
OPTOUT_CODE = "MSISDN.Optout"
OPTOUT_DETAIL = "the number has opted out"


def account_id(username: str) -> UUID:
    return uuid5(NAMESPACE, f"account:{username}")


def account_name_id(username: str) -> UUID:
    """One id per account name whatever its spelling (PRODUCT.md §1: case-insensitive unique)."""
    return uuid5(NAMESPACE, f"account-name:{username.casefold()}")


def api_key_id(key_id: str) -> UUID:
    return uuid5(NAMESPACE, f"api-key:{key_id}")


def file_name_id(account: str, name: str) -> UUID:
    return uuid5(NAMESPACE, f"file-name:{account}:{name}")


def file_id(account: str, name: str, receipt: int) -> UUID:
    return uuid5(NAMESPACE, f"file:{account}:{name}:{receipt}")


def batch_id(file: UUID, number: int) -> UUID:
    return uuid5(file, f"batch:{number}")


def dispatch_log_id(batch: UUID) -> UUID:
    return uuid5(batch, "dispatch")


def delivery_log_id(batch: UUID) -> UUID:
    return uuid5(batch, "delivery")


def file_control_id(file: UUID) -> UUID:
    """The FileControl of a file: its cancel, pause and resume requests."""
    return uuid5(file, "control")


def message_id(file: UUID, index: int) -> UUID:
    """The id a message keeps everywhere: gateway submit, receipts, webhooks."""
    return uuid5(file, f"message:{index}")


def message_id_text(file: UUID, index: int) -> str:
    """str(message_id(file, index)) without the two UUID objects (read models project one per
    message sent). The same UUID version 5: SHA-1 of the namespace and the name, version and
    variant bits set.

    >>> f = UUID("0b7c5e8e-5d0f-4a53-9d53-0e1f6c1b2a77")
    >>> message_id_text(f, 12) == str(message_id(f, 12))
    True
    """
    digest = bytearray(sha1(file.bytes + f"message:{index}".encode(), usedforsecurity=False).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50
    digest[8] = (digest[8] & 0x3F) | 0x80
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


ROUTES_ID = uuid5(NAMESPACE, "routes")

WEBHOOK_EVENTS = ("delivery", "reply")
DEFAULT_HELP_KEYWORDS = ("HELP", "INFO")  # as sftpsms.autoreply's (this module imports only eventsourcing)

# A failed file's event keeps the first contact errors only; its report says how many there were.
MAX_ERRORS_IN_EVENT = 1000


class DomainError(Exception):
    """A command broke a rule of the domain."""


class InsufficientBalance(DomainError):
    def __init__(self, balance: int, needed: int) -> None:
        super().__init__(f"balance {balance} is below the {needed} credits needed")
        self.balance = balance
        self.needed = needed


class Account(Aggregate):
    """An account: credentials, country, credits, sender policy. Opt-outs are recorded here as facts
    and looked up through the `optouts` read model (an account may have millions)."""

    quiet_hours: dict[str, Any] | None = None  # also for snapshots taken before quiet hours existed
    # Later settings, here as well as in __init__: a snapshot taken before they existed restores
    # an account without them.
    help_text: str | None = None
    stop_text: str | None = None
    help_keywords: tuple[str, ...] = DEFAULT_HELP_KEYWORDS
    unicode: bool = False

    class AccountCreated(Aggregate.Created):
        username: str
        password_hash: str
        email: str | None
        country: str
        created_at: str
        parent: str | None

    class CreditsAdded(Aggregate.Event):
        amount: int
        reason: str

        def apply(self, aggregate: Account) -> None:
            aggregate.balance += self.amount

    class CreditsTransferredOut(Aggregate.Event):
        to_account: str
        amount: int

        def apply(self, aggregate: Account) -> None:
            aggregate.balance -= self.amount

    class CreditsTransferredIn(Aggregate.Event):
        from_account: str
        amount: int

        def apply(self, aggregate: Account) -> None:
            aggregate.balance += self.amount

    class SubAccountAdded(Aggregate.Event):
        username: str

        def apply(self, aggregate: Account) -> None:
            aggregate.sub_accounts = [*aggregate.sub_accounts, self.username]

    class CreditsReserved(Aggregate.Event):
        file_id: str
        amount: int

        def apply(self, aggregate: Account) -> None:
            aggregate.balance -= self.amount

    class CreditsRefunded(Aggregate.Event):
        file_id: str
        amount: int
        reason: str

        def apply(self, aggregate: Account) -> None:
            aggregate.balance += self.amount

    class OptOutsAdded(Aggregate.Event):
        msisdns: list[str]

        def apply(self, aggregate: Account) -> None:
            pass  # the optouts read model holds the list

    class OptOutsRemoved(Aggregate.Event):
        msisdns: list[str]

        def apply(self, aggregate: Account) -> None:
            pass  # the optouts read model holds the list

    class SenderPolicyChanged(Aggregate.Event):
        allow_custom: bool

        def apply(self, aggregate: Account) -> None:
            aggregate.allow_custom_sender = self.allow_custom

    class SenderIdAllowed(Aggregate.Event):
        sender_id: str

        def apply(self, aggregate: Account) -> None:
            aggregate.sender_ids = sorted({*aggregate.sender_ids, self.sender_id})

    class SshKeyAdded(Aggregate.Event):
        public_key: str  # OpenSSH format: "ssh-ed25519 AAAA... comment"
        fingerprint: str

        def apply(self, aggregate: Account) -> None:
            aggregate.ssh_keys = {**aggregate.ssh_keys, self.fingerprint: self.public_key}

    class ApiKeyAdded(Aggregate.Event):
        key_id: str
        channel: str

        def apply(self, aggregate: Account) -> None:
            aggregate.api_keys = {**aggregate.api_keys, self.key_id: self.channel}

    class ApiKeyRemoved(Aggregate.Event):
        key_id: str

        def apply(self, aggregate: Account) -> None:
            aggregate.api_keys = {k: c for k, c in aggregate.api_keys.items() if k != self.key_id}

    class SendRateSet(Aggregate.Event):
        rate: float | None  # SMS parts per second; None: the service's default account rate

        def apply(self, aggregate: Account) -> None:
            aggregate.send_rate = self.rate

    class WebhookAdded(Aggregate.Event):
        url: str
        secret: str  # Standard Webhooks "whsec_..." key: HMAC needs it in clear to sign
        events: list[str]  # "delivery", "reply"

        def apply(self, aggregate: Account) -> None:
            aggregate.webhooks[self.url] = {"secret": self.secret, "events": list(self.events)}

    class WebhookRemoved(Aggregate.Event):
        url: str

        def apply(self, aggregate: Account) -> None:
            aggregate.webhooks.pop(self.url, None)

    class WebhookSecretRotated(Aggregate.Event):
        url: str
        secret: str

        def apply(self, aggregate: Account) -> None:
            aggregate.webhooks[self.url] = {**aggregate.webhooks[self.url], "secret": self.secret}

    class QuietHoursSet(Aggregate.Event):
        window: str  # local time at the recipient, "21:00-08:00" (sftpsms/quiet.py)
        days: list[str]  # local weekdays a window starts on: "mon", ... "sun"

        def apply(self, aggregate: Account) -> None:
            aggregate.quiet_hours = {"window": self.window, "days": list(self.days)}

    class QuietHoursCleared(Aggregate.Event):
        def apply(self, aggregate: Account) -> None:
            aggregate.quiet_hours = None

    class UnicodeSet(Aggregate.Event):
        """Whether text outside GSM 03.38 is sent as UCS-2 (else it is a contact error)."""

        enabled: bool

        def apply(self, aggregate: Account) -> None:
            aggregate.unicode = self.enabled

    class AutoRepliesSet(Aggregate.Event):
        """The account's HELP/STOP answers (sftpsms.autoreply); a text of None: that answer is off."""

        help_text: str | None
        stop_text: str | None
        help_keywords: list[str]

        def apply(self, aggregate: Account) -> None:
            aggregate.help_text = self.help_text
            aggregate.stop_text = self.stop_text
            aggregate.help_keywords = tuple(self.help_keywords)

    def __init__(
        self,
        username: str,
        password_hash: str,
        email: str | None,
        country: str,
        created_at: str,
        parent: str | None,
    ) -> None:
        self.username = username
        self.password_hash = password_hash
        self.email = email
        self.country = country
        self.created_at = created_at
        self.parent = parent
        self.balance = 0
        self.allow_custom_sender = False
        self.sender_ids: list[str] = []
        self.api_keys: dict[str, str] = {}  # key id -> channel
        self.ssh_keys: dict[str, str] = {}  # fingerprint -> public key
        self.sub_accounts: list[str] = []
        self.send_rate: float | None = None
        self.webhooks: dict[str, dict[str, Any]] = {}  # url -> {"secret", "events"}
        self.quiet_hours: dict[str, Any] | None = None  # {"window", "days"}; None: off
        self.help_text = None
        self.stop_text = None
        self.help_keywords = DEFAULT_HELP_KEYWORDS
        self.unicode = False

    @property
    def channels_with_keys(self) -> frozenset[str]:
        return frozenset(self.api_keys.values())

    @classmethod
    def create(
        cls,
        *,
        username: str,
        password_hash: str,
        email: str | None,
        country: str,
        created_at: str,
        parent: str | None = None,
    ) -> Account:
        return cls._create(
            cls.AccountCreated,
            id=account_id(username),
            username=username,
            password_hash=password_hash,
            email=email,
            country=country,
            created_at=created_at,
            parent=parent,
        )

    def add_credits(self, amount: int, reason: str = "manual") -> None:
        if amount <= 0:
            raise DomainError("credits to add must be positive")
        self.trigger_event(self.CreditsAdded, amount=amount, reason=reason)

    def transfer_out(self, to_account: str, amount: int) -> None:
        if amount <= 0:
            raise DomainError("credits to transfer must be positive")
        if amount > self.balance:
            raise InsufficientBalance(self.balance, amount)
        self.trigger_event(self.CreditsTransferredOut, to_account=to_account, amount=amount)

    def transfer_in(self, from_account: str, amount: int) -> None:
        self.trigger_event(self.CreditsTransferredIn, from_account=from_account, amount=amount)

    def add_sub_account(self, username: str) -> None:
        self.trigger_event(self.SubAccountAdded, username=username)

    def reserve_credits(self, file: UUID, amount: int) -> None:
        if amount > self.balance:
            raise InsufficientBalance(self.balance, amount)
        self.trigger_event(self.CreditsReserved, file_id=str(file), amount=amount)

    def refund_credits(self, file: UUID, amount: int, reason: str) -> None:
        if amount > 0:
            self.trigger_event(self.CreditsRefunded, file_id=str(file), amount=amount, reason=reason)

    def add_optouts(self, msisdns: list[str]) -> None:
        if msisdns:
            self.trigger_event(self.OptOutsAdded, msisdns=sorted(set(msisdns)))

    def remove_optouts(self, msisdns: list[str]) -> None:
        if msisdns:
            self.trigger_event(self.OptOutsRemoved, msisdns=sorted(set(msisdns)))

    def allow_sender_id(self, sender_id: str) -> None:
        if sender_id not in self.sender_ids:
            self.trigger_event(self.SenderIdAllowed, sender_id=sender_id)

    def add_ssh_key(self, public_key: str, fingerprint: str) -> None:
        if fingerprint not in self.ssh_keys:
            self.trigger_event(self.SshKeyAdded, public_key=public_key, fingerprint=fingerprint)

    def add_api_key(self, key_id: str, channel: str) -> None:
        self.trigger_event(self.ApiKeyAdded, key_id=key_id, channel=channel)

    def remove_api_key(self, key_id: str) -> None:
        if key_id in self.api_keys:
            self.trigger_event(self.ApiKeyRemoved, key_id=key_id)

    def set_sender_policy(self, allow_custom: bool) -> None:
        if allow_custom != self.allow_custom_sender:
            self.trigger_event(self.SenderPolicyChanged, allow_custom=allow_custom)

    def set_send_rate(self, rate: float | None) -> None:
        if rate is not None and rate <= 0:
            raise DomainError("a send rate is a positive number of SMS parts per second")
        if rate != self.send_rate:
            self.trigger_event(self.SendRateSet, rate=rate)

    def add_webhook(self, url: str, secret: str, events: list[str]) -> None:
        unknown = set(events) - set(WEBHOOK_EVENTS)
        if unknown or not events:
            raise DomainError(f"webhook events are some of {', '.join(WEBHOOK_EVENTS)}")
        self.trigger_event(self.WebhookAdded, url=url, secret=secret, events=sorted(set(events)))

    def remove_webhook(self, url: str) -> None:
        if url not in self.webhooks:
            raise DomainError(f"no webhook {url}")
        self.trigger_event(self.WebhookRemoved, url=url)

    def rotate_webhook_secret(self, url: str, secret: str) -> None:
        if url not in self.webhooks:
            raise DomainError(f"no webhook {url}")
        self.trigger_event(self.WebhookSecretRotated, url=url, secret=secret)

    def set_quiet_hours(self, window: str | None, days: list[str] | None = None) -> None:
        """`window` and `days` as sftpsms.quiet.QuietHours.describe() gives them (checked
        there); None: off."""
        if window is None:
            if self.quiet_hours is not None:
                self.trigger_event(self.QuietHoursCleared)
        elif self.quiet_hours != {"window": window, "days": list(days or [])}:
            self.trigger_event(self.QuietHoursSet, window=window, days=list(days or []))

    def set_unicode(self, enabled: bool) -> bool:
        if enabled == self.unicode:
            return False
        self.trigger_event(self.UnicodeSet, enabled=enabled)
        return True

    def set_auto_replies(self, help_text: str | None, stop_text: str | None, help_keywords: list[str]) -> bool:
        """Record new HELP/STOP settings; returns whether anything changed (one event if so)."""
        if (help_text, stop_text, tuple(help_keywords)) == (self.help_text, self.stop_text, tuple(self.help_keywords)):
            return False
        self.trigger_event(
            self.AutoRepliesSet, help_text=help_text, stop_text=stop_text, help_keywords=list(help_keywords)
        )
        return True


class Routes(Aggregate):
    """Route prefixes: numbers starting with one have a network (PRODUCT.md §3)."""

    class RoutesCreated(Aggregate.Created):
        pass

    class RouteAdded(Aggregate.Event):
        prefix: str
        gateway: str

        def apply(self, aggregate: Routes) -> None:
            aggregate.prefixes[self.prefix] = self.gateway

    class RouteRemoved(Aggregate.Event):
        prefix: str

        def apply(self, aggregate: Routes) -> None:
            aggregate.prefixes.pop(self.prefix, None)

    def __init__(self) -> None:
        self.prefixes: dict[str, str] = {}

    @classmethod
    def create(cls) -> Routes:
        return cls._create(cls.RoutesCreated, id=ROUTES_ID)

    def add(self, prefix: str, gateway: str) -> None:
        if self.prefixes.get(prefix) != gateway:
            self.trigger_event(self.RouteAdded, prefix=prefix, gateway=gateway)

    def remove(self, prefix: str) -> None:
        if prefix in self.prefixes:
            self.trigger_event(self.RouteRemoved, prefix=prefix)


class AccountName(Aggregate):
    """Uniqueness of account names across spellings: saved with the account it names, so a second
    spelling (`Demo` beside `demo`) fails the transaction."""

    class AccountNameTaken(Aggregate.Created):
        username: str

    def __init__(self, username: str) -> None:
        self.username = username

    @classmethod
    def create(cls, username: str) -> AccountName:
        return cls._create(cls.AccountNameTaken, id=account_name_id(username), username=username)


class FileName(Aggregate):
    """Uniqueness of file names per account (PRODUCT.md §2: same name processed in the last 48 h is a
    duplicate). Counts receipts so each receipt gets its own deterministic file id, and remembers a
    receipt still in flight so a restart resumes it instead of calling it a duplicate."""

    class FileNameCreated(Aggregate.Created):
        account: str
        name: str

    class NameReceived(Aggregate.Event):
        file_id: str
        at: str

        def apply(self, aggregate: FileName) -> None:
            aggregate.receipts += 1
            aggregate.pending = self.file_id

    class NameSettled(Aggregate.Event):
        file_id: str
        processed: bool
        at: str

        def apply(self, aggregate: FileName) -> None:
            aggregate.pending = None
            if self.processed:
                aggregate.last_processed_at = self.at

    class DuplicateReceived(Aggregate.Event):
        file_id: str
        at: str

        def apply(self, aggregate: FileName) -> None:
            aggregate.receipts += 1

    def __init__(self, account: str, name: str) -> None:
        self.account = account
        self.name = name
        self.receipts = 0
        self.pending: str | None = None
        self.last_processed_at: str | None = None

    @classmethod
    def create(cls, account: str, name: str) -> FileName:
        return cls._create(cls.FileNameCreated, id=file_name_id(account, name), account=account, name=name)

    def receive(self, file: UUID, at: str) -> None:
        self.trigger_event(self.NameReceived, file_id=str(file), at=at)

    def receive_duplicate(self, file: UUID, at: str) -> None:
        self.trigger_event(self.DuplicateReceived, file_id=str(file), at=at)

    def settle(self, file: UUID, processed: bool, at: str) -> None:
        if self.pending == str(file):
            self.trigger_event(self.NameSettled, file_id=str(file), processed=processed, at=at)


class File(Aggregate):
    """One received file (or one entry of a zip): received → accepted or failed → completed."""

    class FileReceived(Aggregate.Created):
        account: str
        name: str
        receipt: int
        size: int
        fingerprint: str
        received_at: str
        envelope: str | None  # the zip it came in, if any

    class FileFailed(Aggregate.Event):
        """Base of the two ways a file fails as a whole."""

        code: str
        detail: str
        contacts: int
        contact_errors: list[dict[str, Any]]
        optouts: int = 0  # opted-out contacts skipped before the file failed (absent in older events)

        def apply(self, aggregate: File) -> None:
            aggregate.status = "failed"
            aggregate.error_code = self.code
            aggregate.detail = self.detail
            aggregate.failure_contacts = self.contacts
            aggregate.failure_errors = self.contact_errors
            aggregate.failure_optouts = self.optouts

    class FileRejected(FileFailed):
        """Failed before its content was judged: duplicate, credits, internal error."""

    class ParseFailed(FileFailed):
        """Its content failed validation."""

    class FileAccepted(Aggregate.Event):
        contacts: int
        messages: int
        rejected: int
        optouts: int
        parts: int
        credits: int
        batches: int
        sender_id: str
        not_before: str | None
        expires_at: str | None
        email: str | None
        warnings: list[str]
        ucs2_messages: int = 0  # of `messages`, those sent as UCS-2, and their parts
        ucs2_parts: int = 0  # (absent in events recorded before UCS-2 could be chosen)

        def apply(self, aggregate: File) -> None:
            aggregate.status = "accepted"
            aggregate.summary = {
                key: value
                for key, value in self.__dict__.items()
                if key not in ("originator_id", "originator_version", "timestamp")
            }

    class FileCompleted(Aggregate.Event):
        status: str  # "processed" | "failed"
        completed_at: str

        def apply(self, aggregate: File) -> None:
            aggregate.outcome = self.status
            aggregate.completed_at = self.completed_at
            aggregate.status = "completed"

    class NotificationSent(Aggregate.Event):
        to: str
        via: str
        at: str
        attempts: int

        def apply(self, aggregate: File) -> None:
            aggregate.notified = True

    class NotificationFailed(Aggregate.Event):
        to: str
        via: str
        at: str
        attempts: int
        error: str

        def apply(self, aggregate: File) -> None:
            aggregate.notified = True  # given up: not tried again

    class ProcessingStarted(Aggregate.Event):
        """An attempt at the file's processing begins: recorded before any work, so a crash
        during it is seen by the next start (an attempt that never ended)."""

        attempt: int
        position: int  # how far the file had got (contacts checkpointed or batches stored)
        at: str

        def apply(self, aggregate: File) -> None:
            aggregate.attempts = self.attempt
            aggregate.attempt_open = True
            aggregate.attempt_position = self.position

    class ProcessingEnded(Aggregate.Event):
        """An attempt ended without finishing the file. `failed`: it raised, ran past its time
        budget or crashed the process, which counts against the file (quarantine); otherwise it
        was paused (the service stopped, the disk was full), which is not the file's fault."""

        attempt: int
        failed: bool
        reason: str

        def apply(self, aggregate: File) -> None:
            aggregate.attempt_open = False
            if self.failed:
                aggregate.failed_attempts += 1
                aggregate.last_failure = self.reason

    class ProcessingReleased(Aggregate.Event):
        """An operator asked for another try (sftpsms files reprocess): the failures are forgiven."""

        at: str

        def apply(self, aggregate: File) -> None:
            aggregate.failed_attempts = 0

    def __init__(
        self,
        account: str,
        name: str,
        receipt: int,
        size: int,
        fingerprint: str,
        received_at: str,
        envelope: str | None,
    ) -> None:
        self.account = account
        self.name = name
        self.receipt = receipt
        self.size = size
        self.fingerprint = fingerprint
        self.received_at = received_at
        self.envelope = envelope
        self.status = "received"
        self.error_code: str | None = None
        self.detail: str | None = None
        self.summary: dict[str, Any] = {}
        self.failure_contacts = 0
        self.notified = False
        self.failure_errors: list[dict[str, Any]] = []
        self.failure_optouts = 0
        self.outcome: str | None = None
        self.completed_at: str | None = None
        self.attempts = 0
        self.attempt_open = False
        self.attempt_position = 0
        self.failed_attempts = 0
        self.last_failure: str | None = None

    @classmethod
    def create(
        cls,
        *,
        account: str,
        name: str,
        receipt: int,
        size: int,
        fingerprint: str,
        received_at: str,
        envelope: str | None,
    ) -> File:
        return cls._create(
            cls.FileReceived,
            id=file_id(account, name, receipt),
            account=account,
            name=name,
            receipt=receipt,
            size=size,
            fingerprint=fingerprint,
            received_at=received_at,
            envelope=envelope,
        )

    @property
    def is_open(self) -> bool:
        return self.status == "received" or self.status == "accepted"

    def reject(
        self,
        code: str,
        detail: str,
        *,
        parse: bool,
        contacts: int = 0,
        contact_errors: list[dict[str, Any]] | None = None,
        optouts: int = 0,
    ) -> None:
        if self.status != "received":
            raise DomainError(f"file {self.id} is {self.status}, cannot be rejected")
        event = self.ParseFailed if parse else self.FileRejected
        self.trigger_event(
            event,
            code=code,
            detail=detail,
            contacts=contacts,
            contact_errors=list(contact_errors or [])[:MAX_ERRORS_IN_EVENT],
            optouts=optouts,
        )

    def accept(self, **summary: Any) -> None:
        if self.status != "received":
            raise DomainError(f"file {self.id} is {self.status}, cannot be accepted")
        self.trigger_event(self.FileAccepted, **summary)

    def notification_sent(self, to: str, via: str, at: str, attempts: int = 1) -> None:
        if not self.notified:
            self.trigger_event(self.NotificationSent, to=to, via=via, at=at, attempts=attempts)

    def notification_failed(self, to: str, via: str, at: str, attempts: int, error: str) -> None:
        if not self.notified:
            self.trigger_event(
                self.NotificationFailed, to=to, via=via, at=at, attempts=attempts, error=error
            )

    def end_crashed_attempt(self, position: int) -> None:
        """An attempt still open when a new one is due was ended by a crash of the process: it
        counts as failed unless it got the file further (`position` grew), as a SIGKILL of a
        healthy run does."""
        if self.attempt_open:
            failed = position <= self.attempt_position
            reason = "the process died while processing it" if failed else "the process died (it had made progress)"
            self.trigger_event(self.ProcessingEnded, attempt=self.attempts, failed=failed, reason=reason)

    def start_processing(self, position: int, at: str) -> int:
        self.end_crashed_attempt(position)
        self.trigger_event(self.ProcessingStarted, attempt=self.attempts + 1, position=position, at=at)
        return self.attempts

    def end_processing(self, attempt: int, *, failed: bool, reason: str) -> None:
        if self.attempt_open and self.attempts == attempt:
            self.trigger_event(self.ProcessingEnded, attempt=attempt, failed=failed, reason=reason)

    def release_processing(self, at: str) -> None:
        if self.failed_attempts:
            self.trigger_event(self.ProcessingReleased, at=at)

    def complete(self, completed_at: str) -> None:
        if self.status == "completed":
            return
        status = "processed" if self.status == "accepted" else "failed"
        self.trigger_event(self.FileCompleted, status=status, completed_at=completed_at)


class ContactBatch(Aggregate):
    """Up to BATCH_SIZE consecutive contacts of one accepted file, with each one's outcome. Many
    batches are saved per transaction: this is where ingest speed is won (FINDINGS.md)."""

    class BatchOpened(Aggregate.Created):
        file_id: str
        account: str
        number: int
        sender_id: str
        not_before: str | None
        expires_at: str | None

    class MessageQueued(Aggregate.Event):
        index: int
        msisdn: str
        customer_id: str | None
        text: str
        parts: int

        def apply(self, aggregate: ContactBatch) -> None:
            aggregate.queued += 1
            aggregate.parts += self.parts

    class ContactRejected(Aggregate.Event):
        index: int
        msisdn: str | None
        code: str
        detail: str

        def apply(self, aggregate: ContactBatch) -> None:
            aggregate.errors.append(
                {"index": self.index, "msisdn": self.msisdn, "code": self.code, "detail": self.detail}
            )

    class OptOutSkipped(Aggregate.Event):
        index: int
        msisdn: str

        def apply(self, aggregate: ContactBatch) -> None:
            aggregate.optouts += 1
            aggregate.errors.append(
                {"index": self.index, "msisdn": self.msisdn, "code": OPTOUT_CODE, "detail": OPTOUT_DETAIL}
            )

    class BatchSealed(Aggregate.Event):
        queued: int
        parts: int
        errors: list[dict[str, Any]]

        def apply(self, aggregate: ContactBatch) -> None:
            aggregate.sealed = True

    class BatchRouted(Aggregate.Event):
        """The batch's messages go through this gateway, not by route (an auto-reply goes back
        through the gateway its inbound reply came from)."""

        gateway: str

        def apply(self, aggregate: ContactBatch) -> None:
            aggregate.gateway = self.gateway

    def __init__(
        self,
        file_id: str,
        account: str,
        number: int,
        sender_id: str,
        not_before: str | None,
        expires_at: str | None,
    ) -> None:
        self.file_id = file_id
        self.account = account
        self.number = number
        self.sender_id = sender_id
        self.not_before = not_before
        self.expires_at = expires_at
        self.queued = 0
        self.parts = 0
        self.optouts = 0
        self.errors: list[dict[str, Any]] = []
        self.sealed = False
        self.gateway: str | None = None

    @classmethod
    def open(
        cls,
        *,
        file: UUID,
        account: str,
        number: int,
        sender_id: str,
        not_before: str | None,
        expires_at: str | None,
        timestamp: Any,
    ) -> ContactBatch:
        return cls._create(
            cls.BatchOpened,
            id=batch_id(file, number),
            file_id=str(file),
            account=account,
            number=number,
            sender_id=sender_id,
            not_before=not_before,
            expires_at=expires_at,
            timestamp=timestamp,
        )

    # The three per-contact methods pass the batch's timestamp explicitly: one clock reading per
    # batch keeps a million events cheap and the batch's facts consistent.
    def queue(self, index: int, msisdn: str, customer_id: str | None, text: str, parts: int) -> None:
        self.trigger_event(
            self.MessageQueued,
            index=index,
            msisdn=msisdn,
            customer_id=customer_id,
            text=text,
            parts=parts,
            timestamp=self.created_on,
        )

    def reject(self, index: int, msisdn: str | None, code: str, detail: str) -> None:
        self.trigger_event(
            self.ContactRejected,
            index=index,
            msisdn=msisdn,
            code=code,
            detail=detail,
            timestamp=self.created_on,
        )

    def skip_optout(self, index: int, msisdn: str) -> None:
        self.trigger_event(self.OptOutSkipped, index=index, msisdn=msisdn, timestamp=self.created_on)

    def route(self, gateway: str) -> None:
        self.trigger_event(self.BatchRouted, gateway=gateway, timestamp=self.created_on)

    def seal(self) -> None:
        self.trigger_event(
            self.BatchSealed,
            queued=self.queued,
            parts=self.parts,
            errors=list(self.errors),
            timestamp=self.created_on,
        )


def auto_reply_id(gateway: str, reply_id: str) -> UUID:
    """One answer per inbound reply, whichever batch the reply was matched to and however often
    the gateway delivers it: also the "file" id of the answer's batch and message."""
    return uuid5(NAMESPACE, f"auto-reply:{gateway}:{reply_id}")


class AutoReply(Aggregate):
    """The answer to one inbound reply (HELP text or STOP confirmation): queued as a one-message
    contact batch of its own (batch_id(id, 0), message_id(id, 0)), its credits reserved under its
    id, in the transaction that records the reply; or not sent, with the reason."""

    class AutoReplyQueued(Aggregate.Created):
        account: str
        kind: str  # "help" | "stop"
        gateway: str  # the inbound reply's, which the answer goes back through
        reply_id: str
        msisdn: str
        in_reply_to: str  # our message id the inbound reply was matched to
        sender_id: str
        text: str
        parts: int
        message_id: str

    class AutoReplyNotSent(Aggregate.Created):
        account: str
        kind: str
        gateway: str
        reply_id: str
        msisdn: str
        in_reply_to: str
        sender_id: str
        text: str
        parts: int
        message_id: str
        reason: str

    def __init__(
        self,
        account: str,
        kind: str,
        gateway: str,
        reply_id: str,
        msisdn: str,
        in_reply_to: str,
        sender_id: str,
        text: str,
        parts: int,
        message_id: str,
        reason: str | None = None,
    ) -> None:
        self.account = account
        self.kind = kind
        self.gateway = gateway
        self.reply_id = reply_id
        self.msisdn = msisdn
        self.in_reply_to = in_reply_to
        self.sender_id = sender_id
        self.text = text
        self.parts = parts
        self.message_id = message_id
        self.reason = reason

    @classmethod
    def queue(cls, *, reason: str | None = None, **fields: Any) -> AutoReply:
        """Queued, or (with a reason) recorded as not sent."""
        ident = auto_reply_id(fields["gateway"], fields["reply_id"])
        fields["message_id"] = str(message_id(ident, 0))
        if reason is None:
            return cls._create(cls.AutoReplyQueued, id=ident, **fields)
        return cls._create(cls.AutoReplyNotSent, id=ident, reason=reason, **fields)


class DispatchLog(Aggregate):
    """What happened to the messages of one contact batch after queueing: submitted to a gateway,
    expired, delivery reports. One log per batch keeps aggregates small."""

    class DispatchStarted(Aggregate.Created):
        batch_id: str
        file_id: str
        account: str

    class MessageSubmitted(Aggregate.Event):
        index: int
        gateway: str
        gateway_id: str  # the gateway's id for the message (its first part's, when it split it)
        parts: int
        submitted_at: str
        gateway_ids: list[str]  # every id the gateway returned (one per part for SMPP)
        msisdn: str
        customer_id: str | None

        def apply(self, aggregate: DispatchLog) -> None:
            aggregate.submitted_indexes[self.index] = self.gateway_id

    class MessageExpired(Aggregate.Event):
        index: int
        parts: int
        at: str
        reason: str = "end"  # "end": unsent at the file's End; "cancelled": its file was cancelled

        def apply(self, aggregate: DispatchLog) -> None:
            aggregate.expired_indexes.add(self.index)

    class MessagesHeld(Aggregate.Event):
        """Messages not submitted because it was quiet time at their recipients' location (the
        account's quiet hours): recorded once per message, the first time it is held."""

        indexes: list[int]
        reason: str  # "quiet_hours"
        at: str
        until: str | None  # when the first of them may go (None: not within a week)

        def apply(self, aggregate: DispatchLog) -> None:
            aggregate.held_indexes.update(self.indexes)

    class BatchDispatched(Aggregate.Event):
        submitted: int
        expired: int
        quiet_expired: int = 0  # of `expired`, those held for quiet hours (0 in events before them)

        def apply(self, aggregate: DispatchLog) -> None:
            aggregate.finished = True

    def __init__(self, batch_id: str, file_id: str, account: str) -> None:
        self.batch_id = batch_id
        self.file_id = file_id
        self.account = account
        self.submitted_indexes: dict[int, str] = {}
        self.expired_indexes: set[int] = set()
        self.held_indexes: set[int] = set()
        self.finished = False

    @classmethod
    def start(cls, *, batch: UUID, file: UUID, account: str) -> DispatchLog:
        return cls._create(
            cls.DispatchStarted,
            id=dispatch_log_id(batch),
            batch_id=str(batch),
            file_id=str(file),
            account=account,
        )

    def submitted(
        self,
        index: int,
        gateway: str,
        gateway_ids: tuple[str, ...] | list[str],
        parts: int,
        at: str,
        *,
        msisdn: str,
        customer_id: str | None,
        timestamp: datetime | None = None,
    ) -> None:
        """(eventstore.dispatch_rows.submitted is the same, building the stored row directly.)"""
        if index not in self.submitted_indexes:
            self.trigger_event(
                self.MessageSubmitted,
                timestamp=timestamp,
                index=index,
                gateway=gateway,
                gateway_id=gateway_ids[0] if gateway_ids else "",
                parts=parts,
                submitted_at=at,
                gateway_ids=list(gateway_ids),
                msisdn=msisdn,
                customer_id=customer_id,
            )

    def expired(self, index: int, parts: int, at: str, reason: str = "end") -> None:
        if index not in self.submitted_indexes and index not in self.expired_indexes:
            self.trigger_event(self.MessageExpired, index=index, parts=parts, at=at, reason=reason)

    def held(self, indexes: list[int], at: str, until: str | None, reason: str = "quiet_hours") -> None:
        new = sorted({i for i in indexes if i not in self.held_indexes and i not in self.submitted_indexes})
        if new:
            self.trigger_event(self.MessagesHeld, indexes=new, reason=reason, at=at, until=until)

    def finish(self) -> None:
        if not self.finished:
            self.trigger_event(
                self.BatchDispatched,
                submitted=len(self.submitted_indexes),
                expired=len(self.expired_indexes),
                quiet_expired=len(self.expired_indexes & self.held_indexes),
            )


CONTROL_ACTIONS = ("cancel", "pause", "resume")


class FileControl(Aggregate):
    """What the account asked of a processed file's dispatch: cancel, pause, resume (issue 12).

    The request events are written by whoever asked (`sftpsms files cancel`, a `<name>.cancel`
    control file); ControlApplied by the dispatcher once it honours the request at `version`:
    from then on no message of the file is submitted while it is paused or cancelled, and a
    cancel's unsent messages have expired with their credits refunded. The rules (a cancelled
    file is never resumed, ...) are sftpsms.control's."""

    class FileControlStarted(Aggregate.Created):
        file_id: str
        account: str
        name: str

    class FileCancelled(Aggregate.Event):
        via: str  # "cli" | "sftp" | "ftp" | ...
        at: str

        def apply(self, aggregate: FileControl) -> None:
            aggregate.state = "cancelled"
            aggregate.cancelled_at = self.at
            aggregate.paused_at = None
            aggregate.requested = self.originator_version

    class FilePaused(Aggregate.Event):
        via: str
        at: str

        def apply(self, aggregate: FileControl) -> None:
            aggregate.state = "paused"
            aggregate.paused_at = self.at
            aggregate.requested = self.originator_version

    class FileResumed(Aggregate.Event):
        via: str
        at: str

        def apply(self, aggregate: FileControl) -> None:
            aggregate.state = "running"
            aggregate.paused_at = None
            aggregate.resumed_at = self.at
            aggregate.requested = self.originator_version

    class ControlApplied(Aggregate.Event):
        action: str  # the request's: "cancel" | "pause" | "resume"
        requested_version: int  # the request event honoured (this aggregate's version)
        messages_cancelled: int  # a cancel's messages expired unsent (0 for the others)
        credits_refunded: int
        at: str

        def apply(self, aggregate: FileControl) -> None:
            aggregate.applied = max(aggregate.applied, self.requested_version)
            aggregate.applied_at = self.at
            aggregate.messages_cancelled += self.messages_cancelled
            aggregate.credits_refunded += self.credits_refunded

    def __init__(self, file_id: str, account: str, name: str) -> None:
        self.file_id = file_id
        self.account = account
        self.name = name
        self.state = "running"
        self.cancelled_at: str | None = None
        self.paused_at: str | None = None
        self.resumed_at: str | None = None
        self.requested = 0  # version of the latest request event
        self.applied = 0  # version of the latest request the dispatcher honoured
        self.applied_at: str | None = None
        self.messages_cancelled = 0
        self.credits_refunded = 0

    @classmethod
    def start(cls, *, file: UUID, account: str, name: str) -> FileControl:
        return cls._create(
            cls.FileControlStarted, id=file_control_id(file), file_id=str(file), account=account, name=name
        )

    @property
    def pending(self) -> bool:
        """A request the dispatcher has not honoured yet."""
        return self.applied < self.requested

    def request(self, action: str, *, via: str, at: str) -> int:
        """Record a request (its rules checked by the caller); returns its version."""
        event = {"cancel": self.FileCancelled, "pause": self.FilePaused, "resume": self.FileResumed}.get(action)
        if event is None:
            raise DomainError(f"a file's dispatch can be one of {', '.join(CONTROL_ACTIONS)}, not {action!r}")
        self.trigger_event(event, via=via, at=at)
        return int(self.version)

    def applied_request(
        self, *, action: str, requested_version: int, messages_cancelled: int, credits_refunded: int, at: str
    ) -> None:
        if requested_version > self.applied:
            self.trigger_event(
                self.ControlApplied,
                action=action,
                requested_version=requested_version,
                messages_cancelled=messages_cancelled,
                credits_refunded=credits_refunded,
                at=at,
            )


class DeliveryLog(Aggregate):
    """Delivery receipts and replies of one contact batch's messages. Apart from DispatchLog so the
    receipts actor and the dispatcher each own the aggregates they write.

    Its events are self-contained (account, file, message id, number, customerId): webhooks and
    audits read them without looking anything else up."""

    class DeliveryStarted(Aggregate.Created):
        batch_id: str
        file_id: str
        account: str

    class DeliveryReported(Aggregate.Event):
        index: int
        message_id: str
        account: str
        file_id: str
        msisdn: str
        customer_id: str | None
        status: str  # "delivered" | "failed" | "expired"
        gateway: str
        gateway_id: str
        error: str | None
        at: str

        def apply(self, aggregate: DeliveryLog) -> None:
            aggregate.statuses[self.index] = self.status

    class ReplyReceived(Aggregate.Event):
        index: int  # of the message replied to
        message_id: str
        account: str
        file_id: str
        msisdn: str
        customer_id: str | None
        text: str
        gateway: str
        reply_id: str
        opt_out: bool  # the reply was an opt-out keyword: the number is now on the opt-out list
        at: str

        def apply(self, aggregate: DeliveryLog) -> None:
            aggregate.reply_ids.add(f"{self.gateway}:{self.reply_id}")

    def __init__(self, batch_id: str, file_id: str, account: str) -> None:
        self.batch_id = batch_id
        self.file_id = file_id
        self.account = account
        self.statuses: dict[int, str] = {}
        self.reply_ids: set[str] = set()

    @classmethod
    def start(cls, *, batch: UUID, file: UUID, account: str) -> DeliveryLog:
        return cls._create(
            cls.DeliveryStarted,
            id=delivery_log_id(batch),
            batch_id=str(batch),
            file_id=str(file),
            account=account,
        )

    def reported(
        self,
        index: int,
        *,
        message_id: UUID,
        msisdn: str,
        customer_id: str | None,
        status: str,
        gateway: str,
        gateway_id: str,
        error: str | None,
        at: str,
        timestamp: datetime | None = None,
    ) -> bool:
        """One final status per message: the first final receipt decides; a repeated receipt, or
        the receipt of another part of the same message, adds nothing. Returns whether recorded.
        (eventstore.dispatch_rows.reported is the same, building the stored row directly.)"""
        if index in self.statuses:
            return False
        self.trigger_event(
            self.DeliveryReported,
            timestamp=timestamp,
            index=index,
            message_id=str(message_id),
            account=self.account,
            file_id=self.file_id,
            msisdn=msisdn,
            customer_id=customer_id,
            status=status,
            gateway=gateway,
            gateway_id=gateway_id,
            error=error,
            at=at,
        )
        return True

    def replied(
        self,
        index: int,
        *,
        message_id: UUID,
        msisdn: str,
        customer_id: str | None,
        text: str,
        gateway: str,
        reply_id: str,
        opt_out: bool,
        at: str,
    ) -> bool:
        """Record a reply once per (gateway, reply id). Returns whether recorded."""
        if f"{gateway}:{reply_id}" in self.reply_ids:
            return False
        self.trigger_event(
            self.ReplyReceived,
            index=index,
            message_id=str(message_id),
            account=self.account,
            file_id=self.file_id,
            msisdn=msisdn,
            customer_id=customer_id,
            text=text,
            gateway=gateway,
            reply_id=reply_id,
            opt_out=opt_out,
            at=at,
        )
        return True


def webhook_log_id(account: str, url: str) -> UUID:
    return uuid5(NAMESPACE, f"webhook-log:{account}:{url}")


def webhook_message_id(source: UUID, version: int) -> str:
    """The Standard Webhooks `webhook-id` of the POST made for one source event: the same for
    every attempt, every URL and every replay, so receivers can de-duplicate."""
    return f"msg_{uuid5(source, f'webhook:{version}').hex}"


class WebhookLog(Aggregate):
    """What became of the POSTs to one webhook URL of one account: one event per settled POST
    (delivered, or given up after retrying) and one per replay run. Snapshotted: it grows."""

    class WebhookLogStarted(Aggregate.Created):
        account: str
        url: str

    class WebhookDelivered(Aggregate.Event):
        webhook_id: str
        kind: str  # "delivery" | "reply"
        source_id: str  # the DeliveryLog the event came from
        source_version: int
        message_id: str
        attempts: int
        status_code: int
        at: str

        def apply(self, aggregate: WebhookLog) -> None:
            aggregate.delivered += 1

    class WebhookFailed(Aggregate.Event):
        webhook_id: str
        kind: str
        source_id: str
        source_version: int
        message_id: str
        attempts: int
        error: str
        at: str

        def apply(self, aggregate: WebhookLog) -> None:
            aggregate.failed += 1

    class WebhookReplay(Aggregate.Event):
        since: str  # as given: an ISO time or a notification position
        until: str | None
        events: int
        delivered: int
        failed: int
        at: str

        def apply(self, aggregate: WebhookLog) -> None:
            aggregate.replays += 1

    def __init__(self, account: str, url: str) -> None:
        self.account = account
        self.url = url
        self.delivered = 0
        self.failed = 0
        self.replays = 0

    @classmethod
    def start(cls, *, account: str, url: str) -> WebhookLog:
        return cls._create(cls.WebhookLogStarted, id=webhook_log_id(account, url), account=account, url=url)

    def settled(
        self,
        *,
        webhook_id: str,
        kind: str,
        source_id: UUID,
        source_version: int,
        message_id: str,
        attempts: int,
        status_code: int | None,
        error: str | None,
        at: str,
    ) -> None:
        """Record one POST's end: delivered with the receiver's 2xx, or failed with the last error."""
        common: dict[str, Any] = {
            "webhook_id": webhook_id,
            "kind": kind,
            "source_id": str(source_id),
            "source_version": source_version,
            "message_id": message_id,
            "attempts": attempts,
            "at": at,
        }
        if error is None and status_code is not None:
            self.trigger_event(self.WebhookDelivered, status_code=status_code, **common)
        else:
            self.trigger_event(self.WebhookFailed, error=error or f"HTTP {status_code}", **common)

    def replayed(self, *, since: str, until: str | None, events: int, delivered: int, failed: int, at: str) -> None:
        self.trigger_event(
            self.WebhookReplay, since=since, until=until, events=events, delivered=delivered, failed=failed, at=at
        )


class ApiKey(Aggregate):
    """An API key: opens one channel of one account. Only a hash of its secret is kept."""

    class ApiKeyCreated(Aggregate.Created):
        key_id: str
        account: str
        channel: str
        secret_hash: str
        created_at: str

    class ApiKeyRevoked(Aggregate.Event):
        at: str

        def apply(self, aggregate: ApiKey) -> None:
            aggregate.revoked_at = self.at

    def __init__(self, key_id: str, account: str, channel: str, secret_hash: str, created_at: str) -> None:
        self.key_id = key_id
        self.account = account
        self.channel = channel
        self.secret_hash = secret_hash
        self.created_at = created_at
        self.revoked_at: str | None = None

    @classmethod
    def create(cls, *, key_id: str, account: str, channel: str, secret_hash: str, created_at: str) -> ApiKey:
        return cls._create(
            cls.ApiKeyCreated,
            id=api_key_id(key_id),
            key_id=key_id,
            account=account,
            channel=channel,
            secret_hash=secret_hash,
            created_at=created_at,
        )

    def revoke(self, at: str) -> None:
        if self.revoked_at is None:
            self.trigger_event(self.ApiKeyRevoked, at=at)


def login_record_id(username: str) -> UUID:
    return uuid5(NAMESPACE, f"logins:{username}")


class LoginRecord(Aggregate):
    """Failed logins and lockouts of one username (which need not be an account's)."""

    class LoginRecordStarted(Aggregate.Created):
        username: str

    class LoginFailed(Aggregate.Event):
        peer: str
        reason: str
        at: str

        def apply(self, aggregate: LoginRecord) -> None:
            aggregate.failures += 1

    class LoginLockedOut(Aggregate.Event):
        key: str  # "pair:<address>:<name>" or "peer:<address>" (older logs: "user:<name>")
        until: str

        def apply(self, aggregate: LoginRecord) -> None:
            aggregate.lockouts += 1

    def __init__(self, username: str) -> None:
        self.username = username
        self.failures = 0
        self.lockouts = 0

    @classmethod
    def start(cls, username: str) -> LoginRecord:
        return cls._create(cls.LoginRecordStarted, id=login_record_id(username), username=username)

    def failed(self, peer: str, reason: str, at: str) -> None:
        self.trigger_event(self.LoginFailed, peer=peer, reason=reason, at=at)

    def locked_out(self, key: str, until: str) -> None:
        self.trigger_event(self.LoginLockedOut, key=key, until=until)


def validation_id(account: str, name: str, received_at: str) -> UUID:
    """One id per upload into Validate (the account, the name and when it arrived)."""
    return uuid5(NAMESPACE, f"validation:{account}:{name}:{received_at}")


class Validation(Aggregate):
    """An upload into Validate: checked as a real upload of the same bytes would be and reported,
    never sent (issue 12). No credits, no file name taken: FileValidated is its only event."""

    class FileValidated(Aggregate.Created):
        account: str
        name: str
        sha256: str
        size: int
        envelope: str | None  # the zip it came in, if any
        status: str  # "valid" | "invalid"
        error_code: str | None
        contacts: int
        would_queue: int
        optouts_skipped: int
        contact_errors: int
        parts: int
        credits_needed: int
        received_at: str
        validated_at: str

    def __init__(
        self,
        account: str,
        name: str,
        sha256: str,
        size: int,
        envelope: str | None,
        status: str,
        error_code: str | None,
        contacts: int,
        would_queue: int,
        optouts_skipped: int,
        contact_errors: int,
        parts: int,
        credits_needed: int,
        received_at: str,
        validated_at: str,
    ) -> None:
        self.account = account
        self.name = name
        self.sha256 = sha256
        self.size = size
        self.envelope = envelope
        self.status = status
        self.error_code = error_code
        self.contacts = contacts
        self.would_queue = would_queue
        self.optouts_skipped = optouts_skipped
        self.contact_errors = contact_errors
        self.parts = parts
        self.credits_needed = credits_needed
        self.received_at = received_at
        self.validated_at = validated_at

    @classmethod
    def record(cls, *, account: str, name: str, received_at: str, **fields: Any) -> Validation:
        return cls._create(
            cls.FileValidated,
            id=validation_id(account, name, received_at),
            account=account,
            name=name,
            received_at=received_at,
            **fields,
        )
