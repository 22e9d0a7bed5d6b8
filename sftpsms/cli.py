"""The `sftpsms` command: run the service and administer it (works while the server runs)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

from eventstore.domain import (
    Account,
    DeliveryLog,
    DispatchLog,
    DomainError,
    FileName,
    account_id,
    batch_id,
    delivery_log_id,
    dispatch_log_id,
    file_control_id,
    file_name_id,
)
from eventstore.projections import ReadModels
from eventstore.store import SmsStore, UnknownAccount, open_store
from sftpsms import folders, gcwatch
from sftpsms.channels import CHANNELS, channel_active
from sftpsms.config import Settings
from sftpsms.gateways import GatewayConfigError, load_gateways
from sftpsms.names import BadName, check_account_name
from sftpsms.numbers import normalise_msisdn
from sftpsms.passwords import hash_password

DEMO_USER = "demo"
DEMO_CREDITS = 10_000
DEMO_CREATED_AT = datetime(2023, 1, 1, tzinfo=UTC)  # a legacy account: SFTP works without keys


class CliError(Exception):
    """A problem the user can fix; printed without a traceback, exit status 2."""


def _account_name(text: str) -> str:
    """argparse type of every argument that names an account (PRODUCT.md §1)."""
    try:
        return check_account_name(text)
    except BadName as bad:
        raise argparse.ArgumentTypeError(str(bad)) from None


def _settings(args: argparse.Namespace, **overrides: Any) -> Settings:
    settings = Settings.from_env(data_dir=args.data_dir, store=getattr(args, "store", None), node=getattr(args, "node", None), **overrides)
    settings.local_dir.mkdir(parents=True, exist_ok=True)
    return settings


@contextmanager
def _store(settings: Settings) -> Iterator[SmsStore]:
    """The event store for one command. A broken domain rule (unknown account or key, an account
    that exists, a balance too low, ...) becomes a CliError: a message, not a traceback."""
    store = open_store(settings.data_dir, settings.store)
    try:
        yield store
    except DomainError as error:
        raise CliError(str(error)) from None
    finally:
        store.close()


def _models(settings: Settings, store: SmsStore) -> ReadModels:
    models = ReadModels(settings.readmodels_db)
    models.catch_up(store)
    return models


def _print_table(rows: list[dict[str, Any]], columns: Sequence[str]) -> None:
    if not rows:
        print("(none)")
        return
    widths = {c: max(len(c), *(len(str(r.get(c, "") if r.get(c) is not None else "-")) for r in rows)) for c in columns}
    print("  ".join(c.upper().ljust(widths[c]) for c in columns))
    for row in rows:
        print("  ".join(str(row.get(c) if row.get(c) is not None else "-").ljust(widths[c]) for c in columns))


# ---- commands ---------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    from actors.bridge import run
    from actors.supervisor import run_service

    settings = _settings(
        args,
        sftp_host=args.sftp_host,
        sftp_port=args.sftp_port,
        ftp_port=args.ftp_port,
        http_host=args.http_host,
        http_port=args.http_port,
        ftp_certfile=args.ftp_cert,
        ftp_keyfile=args.ftp_key,
        ftp_passive_ports=args.ftp_passive_ports,
        send_rate=args.send_rate,
        smtp_host=args.smtp_host,
        smtp_port=args.smtp_port,
        smtp_starttls=args.smtp_starttls or None,
        smtp_user=args.smtp_user,
        mail_from=args.mail_from,
    )
    if settings.ftp_port >= 0:
        from actors.ftp_server import FtpSettingError, parse_port_range

        try:
            parse_port_range(settings.ftp_passive_ports)
        except FtpSettingError as error:
            raise CliError(str(error)) from None
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    for noisy in ("asyncssh",):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    gcwatch.watch()
    if args.demo:
        _ensure_demo(settings)

    async def main(portal: Any) -> None:
        import trio

        async with trio.open_nursery() as nursery:
            running = await nursery.start(run_service, settings, portal)
            doors = f"sftp on {settings.sftp_host}:{running.sftp_port}"
            if running.ftp_port is not None:
                doors += f", ftp on {settings.sftp_host}:{running.ftp_port}"
            if running.http_port is not None:
                doors += f", http on {settings.http_host}:{running.http_port}"
            print(
                f"sftpsms serving: {doors}, "
                f"data in {settings.data_dir.resolve()}",
                flush=True,
            )
            if running.http_port is not None:
                print(
                    f"control panel: http://{settings.http_host}:{running.http_port}/ (log in as the account);"
                    f" REST API: http://{settings.http_host}:{running.http_port}/api/v1/ (a rest key)",
                    flush=True,
                )

    try:
        run(main)
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
    return 0


def _ensure_demo(settings: Settings) -> None:
    credentials = settings.data_dir / "demo-credentials.txt"
    with _store(settings) as store:
        try:
            store.account(DEMO_USER)
        except UnknownAccount:
            password = secrets.token_urlsafe(12)
            store.create_account(
                username=DEMO_USER,
                password_hash=hash_password(password),
                email="demo@example.com",
                country="ZA",
                created_at=DEMO_CREATED_AT,
            )
            store.add_credits(DEMO_USER, DEMO_CREDITS, "demo")
            credentials.write_text(f"{DEMO_USER}\n{password}\n")
            credentials.chmod(0o600)
        username, password = credentials.read_text().split()[:2]
        balance = store.account(DEMO_USER).balance
    print(
        f"demo account: username {username!r} password {password!r} ({balance} credits)\n"
        f"  try: sftp -P {settings.sftp_port} {username}@{settings.sftp_host}   then: put file.json Send_SMS/",
        flush=True,
    )


def cmd_account_create(args: argparse.Namespace) -> int:
    settings = _settings(args)
    created_at = (
        datetime.combine(date.fromisoformat(args.created_at), datetime.min.time(), tzinfo=UTC)
        if args.created_at
        else datetime.now(UTC)
    )
    with _store(settings) as store:
        store.create_account(
            username=args.username,
            password_hash=hash_password(args.password),
            email=args.email,
            country=args.country.upper(),
            created_at=created_at,
            parent=args.parent,
        )
        if args.allow_sender_id:
            store.set_sender_policy(args.username, True)
    _emit(args, {"username": args.username, "created_at": created_at.isoformat()}, f"account {args.username} created")
    return 0


def cmd_account_show(args: argparse.Namespace) -> int:
    settings = _settings(args)
    with _store(settings) as store:
        account = store.account(args.username)
        models = _models(settings, store)
        optouts = models.db.execute("SELECT count(*) FROM optouts WHERE account = ?", [args.username]).fetchone()[0]
        models.close()
    info = {
        "username": account.username,
        "email": account.email,
        "country": account.country,
        "created_at": account.created_at,
        "credits": account.balance,
        "custom_sender_id": account.allow_custom_sender,
        "sender_ids": account.sender_ids,
        "channels": {
            channel: channel_active(datetime.fromisoformat(account.created_at), channel, account.channels_with_keys)
            for channel in CHANNELS
        },
        "api_keys": account.api_keys,
        "ssh_keys": sorted(account.ssh_keys),
        "optouts": optouts,
        "parent": account.parent,
        "sub_accounts": account.sub_accounts,
        "send_rate": account.send_rate if account.send_rate is not None else f"default ({settings.account_rate:g})",
        "quiet_hours": account.quiet_hours,
        "auto_replies": _auto_replies_info(account),
        "unicode": account.unicode,
    }
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for key, value in info.items():
            print(f"{key:18} {value}")
    return 0


def cmd_apikey_create(args: argparse.Namespace) -> int:
    settings = _settings(args)
    key_id = "ak_" + secrets.token_hex(8)
    secret = secrets.token_urlsafe(24)
    with _store(settings) as store:
        store.create_api_key(
            args.username, key_id=key_id, channel=args.channel, secret_hash=hash_password(secret), now=datetime.now(UTC)
        )
    text = (
        f"API key for {args.username} on the {args.channel} channel (the secret is shown only now):\n"
        f"  key id: {key_id}\n  secret: {secret}\n"
        f"Log in with the key id as the username and the secret as the password."
    )
    _emit(args, {"username": args.username, "channel": args.channel, "key_id": key_id, "secret": secret}, text)
    return 0


def cmd_apikey_list(args: argparse.Namespace) -> int:
    settings = _settings(args)
    with _store(settings) as store:
        store.account(args.username)
        models = _models(settings, store)
        rows = list(
            models.db.table("api_keys").rows_where(
                "account = ?", [args.username], order_by="created_at", select="key_id, channel, created_at, revoked_at"
            )
        )
        models.close()
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        _print_table(rows, ["key_id", "channel", "created_at", "revoked_at"])
    return 0


def cmd_apikey_revoke(args: argparse.Namespace) -> int:

    settings = _settings(args)
    with _store(settings) as store:
        key = store.revoke_api_key(args.key_id, datetime.now(UTC))
        still_open = store.account(key.account).channels_with_keys
    closed = "" if key.channel in still_open else f"; the {key.channel} channel is now inactive for {key.account}"
    _emit(args, {"key_id": args.key_id, "revoked_at": key.revoked_at}, f"API key {args.key_id} revoked{closed}")
    return 0


def cmd_sshkey_add(args: argparse.Namespace) -> int:
    import asyncssh

    try:
        text = Path(args.file).read_text().strip()
        key = asyncssh.import_public_key(text)
    except (OSError, ValueError, asyncssh.KeyImportError) as error:
        raise CliError(f"{args.file}: not an SSH public key ({error})") from None
    fingerprint = key.get_fingerprint()
    settings = _settings(args)
    with _store(settings) as store:
        store.add_ssh_key(args.username, key.export_public_key().decode().strip(), fingerprint)
    _emit(args, {"username": args.username, "fingerprint": fingerprint}, f"{args.username}: SSH key {fingerprint} added")
    return 0


def cmd_senderid_allow(args: argparse.Namespace) -> int:
    from sftpsms.intake import SENDER_ALPHANUMERIC, SENDER_NUMERIC

    if not (SENDER_ALPHANUMERIC.fullmatch(args.sender_id) or SENDER_NUMERIC.fullmatch(args.sender_id)):
        raise CliError("a sender ID is up to 11 letters and digits, or up to 15 digits")
    settings = _settings(args)
    with _store(settings) as store:
        store.allow_sender_id(args.username, args.sender_id)
    _emit(args, {"username": args.username, "sender_id": args.sender_id}, f"{args.username} may send as {args.sender_id}")
    return 0


def cmd_credits_transfer(args: argparse.Namespace) -> int:
    settings = _settings(args)
    with _store(settings) as store:
        parent_balance, sub_balance = store.transfer_credits(args.parent, args.sub, args.amount)
    _emit(
        args,
        {"from": args.parent, "to": args.sub, "amount": args.amount, "balances": {args.parent: parent_balance, args.sub: sub_balance}},
        f"{args.amount} credits {args.parent} -> {args.sub}; balances {parent_balance} and {sub_balance}",
    )
    return 0


def cmd_credits_add(args: argparse.Namespace) -> int:
    if args.amount <= 0:
        raise CliError("the amount must be a positive number of credits")
    settings = _settings(args)
    with _store(settings) as store:
        balance = store.add_credits(args.username, args.amount)
    _emit(args, {"username": args.username, "balance": balance}, f"{args.username}: balance {balance} credits")
    return 0


def _normalised(store: SmsStore, username: str, numbers: list[str]) -> list[str]:
    country = store.account(username).country
    result = []
    for raw in numbers:
        msisdn = normalise_msisdn(raw, country)
        if msisdn is None:
            raise CliError(f"{raw!r} is not a phone number")
        result.append(msisdn)
    return result


def cmd_optout(args: argparse.Namespace) -> int:
    settings = _settings(args)
    with _store(settings) as store:
        numbers = _normalised(store, args.username, args.msisdns)
        if args.action == "add":
            store.change_optouts(args.username, add=numbers)
        else:
            store.change_optouts(args.username, add=[], remove=numbers)
    verb = "opted out" if args.action == "add" else "opted back in"
    _emit(args, {"username": args.username, args.action: numbers}, f"{len(numbers)} numbers {verb}: {' '.join(numbers)}")
    return 0


def cmd_account_rate(args: argparse.Namespace) -> int:
    rate: float | None = None
    if args.rate != "default":
        try:
            rate = float(args.rate)
        except ValueError:
            raise CliError("a rate is SMS parts per second (a positive number), or 'default'") from None
    settings = _settings(args)
    with _store(settings) as store:
        store.set_send_rate(args.username, rate)
    shown = f"{rate:g} parts/s" if rate is not None else f"the default ({settings.account_rate:g} parts/s)"
    _emit(args, {"username": args.username, "send_rate": rate}, f"{args.username} sends at {shown}")
    return 0


def cmd_account_quiet_hours(args: argparse.Namespace) -> int:
    from sftpsms.quiet import QuietHours, QuietHoursError

    settings = _settings(args)
    if args.window.lower() == "off":
        if args.days is not None:
            raise CliError("--days goes with a window, not with 'off'")
        with _store(settings) as store:
            store.set_quiet_hours(args.username, None)
        _emit(args, {"username": args.username, "quiet_hours": None}, f"{args.username}: quiet hours off")
        return 0
    try:
        hours = QuietHours.parse(args.window, args.days)
    except QuietHoursError as error:
        raise CliError(str(error)) from None
    described = hours.describe()
    with _store(settings) as store:
        store.set_quiet_hours(args.username, described["window"], described["days"])
    days = "every day" if len(hours.days) == 7 else ",".join(described["days"])
    _emit(
        args,
        {"username": args.username, "quiet_hours": described},
        f"{args.username}: no message is submitted {described['window']} at the recipient's local time ({days})",
    )
    return 0


def _auto_replies_info(account: Any) -> dict[str, Any]:
    return {
        "enabled": account.help_text is not None or account.stop_text is not None,
        "help_text": account.help_text,
        "stop_text": account.stop_text,
        "help_keywords": list(account.help_keywords),
    }


def cmd_account_unicode(args: argparse.Namespace) -> int:
    settings = _settings(args)
    enabled = args.state == "on"
    with _store(settings) as store:
        changed = store.set_unicode(args.username, enabled)
    text = (
        f"{args.username}: text outside GSM 03.38 is sent as UCS-2 (70 characters in one SMS, 67 per part)"
        if enabled
        else f"{args.username}: GSM 03.38 only (other text is a contact error)"
    )
    _emit(args, {"username": args.username, "unicode": enabled, "changed": changed}, text + ("" if changed else " (unchanged)"))
    return 0


def cmd_account_replies(args: argparse.Namespace) -> int:
    from sftpsms.autoreply import (
        AutoReplyInvalid,
        check_answer_text,
        check_keywords,
        confirmation_warnings,
        parse_keywords,
    )

    settings = _settings(args)
    warnings: list[str] = []
    with _store(settings) as store:
        account = store.account(args.username)
        help_text, stop_text, keywords = account.help_text, account.stop_text, tuple(account.help_keywords)
        try:
            if args.off:
                if args.help_text is not None or args.stop_text is not None:
                    raise CliError("--off turns both answers off; give no texts with it")
                help_text = stop_text = None
            if args.help_text is not None:
                help_text = check_answer_text(args.help_text, "HELP", unicode=account.unicode)
            if args.stop_text is not None:
                stop_text = check_answer_text(args.stop_text, "STOP", unicode=account.unicode)
                warnings = confirmation_warnings(stop_text)
            if args.help_keywords is not None:
                keywords = parse_keywords(args.help_keywords)
            check_keywords(keywords, settings.optout_words)
        except AutoReplyInvalid as error:
            raise CliError(str(error)) from None
        changed = store.set_auto_replies(args.username, help_text, stop_text, keywords)
        info = _auto_replies_info(store.account(args.username))
    state = "on" if info["enabled"] else "off"
    lines = [f"{args.username}: HELP/STOP answers {state}" + ("" if changed else " (unchanged)")]
    lines += [f"  help text ({'/'.join(info['help_keywords'])}): {info['help_text'] or '-'}", f"  stop text: {info['stop_text'] or '-'}"]
    lines += [f"  warning: {warning}" for warning in warnings]
    _emit(args, {"username": args.username, "changed": changed, "warnings": warnings, **info}, "\n".join(lines))
    return 0


def _webhook_events(text: str) -> list[str]:
    from eventstore.domain import WEBHOOK_EVENTS

    events = sorted({part.strip() for part in text.split(",") if part.strip()})
    unknown = [event for event in events if event not in WEBHOOK_EVENTS]
    if unknown or not events:
        raise CliError(f"--events is a comma-separated list of {', '.join(WEBHOOK_EVENTS)}")
    return events


def cmd_webhook_add(args: argparse.Namespace) -> int:
    from urllib.parse import urlsplit

    from sftpsms.webhooks import new_secret

    parts = urlsplit(args.url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CliError(f"{args.url!r} is not an http:// or https:// URL")
    events = _webhook_events(args.events)
    secret = new_secret()
    settings = _settings(args)
    with _store(settings) as store:
        store.add_webhook(args.username, args.url, secret, events)
    text = (
        f"webhook for {args.username}: {args.url} ({', '.join(events)})\n"
        f"  signing secret (shown only now): {secret}\n"
        f"Verify each POST's webhook-signature with it (Standard Webhooks)."
    )
    _emit(args, {"username": args.username, "url": args.url, "events": events, "secret": secret}, text)
    return 0


def cmd_webhook_list(args: argparse.Namespace) -> int:
    from eventstore.domain import webhook_log_id

    settings = _settings(args)
    rows = []
    with _store(settings) as store:
        for url, hook in sorted(store.account(args.username).webhooks.items()):
            delivered = failed = 0
            if store.exists(webhook_log_id(args.username, url)):
                hook_log = store.webhook_log(args.username, url)
                delivered, failed = hook_log.delivered, hook_log.failed
            rows.append({"url": url, "events": ",".join(hook["events"]), "delivered": delivered, "failed": failed})
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        _print_table(rows, ["url", "events", "delivered", "failed"])
    return 0


def cmd_webhook_remove(args: argparse.Namespace) -> int:
    settings = _settings(args)
    with _store(settings) as store:
        store.remove_webhook(args.username, args.url)
    _emit(args, {"username": args.username, "url": args.url, "removed": True}, f"webhook {args.url} removed from {args.username}")
    return 0


def cmd_webhook_rotate(args: argparse.Namespace) -> int:
    from sftpsms.webhooks import new_secret

    secret = new_secret()
    settings = _settings(args)
    with _store(settings) as store:
        store.rotate_webhook_secret(args.username, args.url, secret)
    text = (
        f"webhook {args.url} of {args.username}: new signing secret (shown only now): {secret}\n"
        f"POSTs from now on are signed with it; the old secret no longer verifies them."
    )
    _emit(args, {"username": args.username, "url": args.url, "secret": secret}, text)
    return 0


def cmd_webhook_replay(args: argparse.Namespace) -> int:
    from actors.webhooks import ReplayRefused, replay_range

    def progress(done: int, read: int) -> None:
        print(f"replayed {done} of {read} POSTs read so far", file=sys.stderr, flush=True)

    settings = _settings(args)
    try:
        replayed = replay_range(settings, args.username, args.since, args.until, args.url, progress)
    except ReplayRefused as refused:
        raise CliError(str(refused)) from None
    except DomainError as error:
        raise CliError(str(error)) from None
    result = replayed["webhooks"]
    total = {key: replayed[key] for key in ("events", "delivered", "failed")}
    if args.json:
        print(json.dumps({"username": args.username, "since": args.since, "until": args.until, "webhooks": result, **total}))
    else:
        for url, counts in result.items():
            print(f"{url}: {counts['delivered']} delivered, {counts['failed']} failed of {counts['events']}")
        print(f"replayed {total['events']} POSTs: {total['delivered']} delivered, {total['failed']} failed")
    return 0 if total["failed"] == 0 else 1


def cmd_route_add(args: argparse.Namespace) -> int:
    prefix = args.prefix.lstrip("+")
    if not prefix.isdigit():
        raise CliError("a route prefix is digits in international form, e.g. 2799")
    settings = _settings(args)
    try:
        gateways = load_gateways(settings.gateways_path)
    except GatewayConfigError as error:
        raise CliError(str(error)) from None
    if args.gateway not in gateways:
        raise CliError(
            f"no gateway {args.gateway!r} in {settings.gateways_path}; configured: {', '.join(gateways.names())}"
        )
    with _store(settings) as store:
        store.add_route(prefix, args.gateway)
    _emit(args, {"prefix": prefix, "gateway": args.gateway}, f"route {prefix} -> {args.gateway}")
    return 0


def cmd_route_list(args: argparse.Namespace) -> int:
    settings = _settings(args)
    with _store(settings) as store:
        routes = [{"prefix": p, "gateway": g} for p, g in sorted(store.routes().items())]
    if args.json:
        print(json.dumps(routes, indent=2))
    else:
        _print_table(routes, ["prefix", "gateway"])
    return 0


def cmd_files(args: argparse.Namespace) -> int:
    settings = _settings(args)
    with _store(settings) as store:
        models = _models(settings, store)
        accounts: list[str | None] = [args.account]
        if args.account and args.with_subaccounts:
            accounts += store.account(args.account).sub_accounts
        if getattr(args, "validations", False):
            rows = [row for account in accounts for row in models.validations(account=account)]
            quiet = {}
        else:
            rows = [row for account in accounts for row in models.files(account=account)]
            quiet = models.quiet_counts([row["file_id"] for row in rows])
        models.close()
    for row in rows if not getattr(args, "validations", False) else []:  # held for quiet hours, and of those expired
        row["quiet_held"], row["quiet_expired"] = quiet.get(row["file_id"], (0, 0))
    if args.json:
        print(json.dumps(rows, indent=2))
    elif getattr(args, "validations", False):
        _print_table(
            rows,
            ["account", "name", "status", "error_code", "contacts", "would_queue", "optouts_skipped", "contact_errors", "credits_needed", "received_at"],
        )
    else:
        _print_table(
            rows,
            ["account", "name", "status", "error_code", "contacts", "messages_queued", "optouts_skipped", "credits_used",
             "quiet_held", "quiet_expired", "received_at"],
        )
    return 0


def cmd_files_reprocess(args: argparse.Namespace) -> int:
    """A quarantined file again: one filed in Errors with InternalServerError goes back into
    Send_SMS (the sweep takes it as a new upload of the same name, with its own report); an
    accepted one held in work/ has its failed attempts forgiven (recovery resumes it). Works while
    the server runs."""
    from eventsourcing.application import AggregateNotFoundError

    from sftpsms.errors import ErrorCode
    from sftpsms.filing import filed_name
    from sftpsms.folders import ERRORS, SEND, report_path

    settings = _settings(args)
    with _store(settings) as store:
        try:
            file = store.file_by_name(args.account, args.name)
        except AggregateNotFoundError:
            raise CliError(f"no file named {args.name!r} for account {args.account!r}") from None
        if file.status == "accepted":
            if not file.failed_attempts:
                raise CliError(f"{args.name} is being processed (not held): nothing to do")
            store.release_processing(file.id, datetime.now(UTC))
            data = {"account": args.account, "name": args.name, "file_id": str(file.id), "action": "released"}
            _emit(args, data, f"{args.name}: released; recovery resumes it within {settings.work_retry_interval:g} s")
            return 0
        if file.status != "completed" or file.error_code != ErrorCode.INTERNAL_SERVER_ERROR:
            state = file.status if file.status != "completed" else f"{file.outcome} ({file.error_code or 'no error'})"
            raise CliError(f"{args.name} is {state}: only files that failed with InternalServerError can be reprocessed")
    root = settings.account_root(args.account)
    filed = root / ERRORS / filed_name(args.name)
    if not filed.is_file():
        raise CliError(f"{filed} is gone: upload the file again instead")
    target = root / SEND / filed.name  # the name itself, unless no path can hold it
    if target.exists():
        raise CliError(f"a file named {target.name!r} is waiting in {SEND} already")
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(filed, target)
    report_path(filed.parent, filed.name).unlink(missing_ok=True)  # its events keep it (sftpsms replay)
    data = {"account": args.account, "name": args.name, "file_id": str(file.id), "action": "requeued", "path": str(target)}
    _emit(args, data, f"{args.name}: back in {SEND}; processed again within {settings.sweep_interval:g} s")
    return 0


def cmd_files_control(args: argparse.Namespace) -> int:
    """`files cancel|pause|resume ACCOUNT NAME`: record the request, wait for the dispatcher to
    honour it, rewrite the file's report. Exit 0 once honoured, 1 when no running service
    honoured it within --wait (it stays recorded: the service honours it when it runs), 2 when
    refused (unknown name, a cancelled file resumed, ...)."""
    import time

    from actors.controls import refile_report
    from eventstore import controls
    from sftpsms.control import ControlRefused, outcome_text

    settings = _settings(args)
    action = args.action
    with _store(settings) as store:
        try:
            request = controls.request_control(store, args.account, args.name, action, via="cli", now=datetime.now(UTC))
        except ControlRefused as refused:
            if args.json:
                print(json.dumps({"account": args.account, "name": args.name, "action": action, "status": "failed",
                                  "error_code": refused.code, "detail": refused.detail}))
                return 2
            raise CliError(f"{refused.code}: {refused.detail}") from None
        control = controls.file_control(store, request.file_id)
        if request.version is not None:
            deadline = time.monotonic() + args.wait
            while (control is None or control.applied < request.version) and time.monotonic() < deadline:
                time.sleep(0.05)
                control = controls.file_control(store, request.file_id)
        honoured = control is not None and (request.version is None or control.applied >= request.version)
        if honoured:
            refile_report(settings, store, request.file_id)
    assert control is not None
    if honoured:
        detail = outcome_text(
            action,
            name=args.name,
            done=request.version is not None,
            messages_cancelled=control.messages_cancelled,
            credits_refunded=control.credits_refunded,
        )
    else:
        detail = (
            f"{action} of {args.name} recorded, but no running service honoured it within {args.wait:g} s; "
            "the service honours it as soon as it runs"
        )
    data = {
        "account": args.account,
        "name": args.name,
        "file_id": str(request.file_id),
        "action": action,
        "status": "done" if honoured else "pending",
        "error_code": None,
        "detail": detail,
        "dispatch": control.state,
        "messages_cancelled": control.messages_cancelled,
        "credits_refunded": control.credits_refunded,
    }
    _emit(args, data, detail)
    return 0 if honoured else 1


def _event_row(event: Any) -> dict[str, Any]:
    fields = {
        k: v
        for k, v in event.__dict__.items()
        if k not in ("originator_id", "originator_version", "timestamp", "originator_topic")
    }
    return {"event": type(event).__name__, "at": event.timestamp.isoformat(), **fields}


def file_history(store: SmsStore, account: str, name: str) -> list[dict[str, Any]]:
    """Every receipt of the name, each with its file events and a summary of its batches."""
    from eventsourcing.application import AggregateNotFoundError

    try:
        index = store.get(FileName, file_name_id(account, name))
    except AggregateNotFoundError:
        return []
    history = []
    for receipt in range(1, index.receipts + 1):
        file = store.file_by_name(account, name, receipt)
        events = [_event_row(e) for e in store.events.get(file.id)]
        # Its cancel, pause and resume (issue 12), with the refunds of a controlled file.
        control = [_event_row(e) for e in store.events.get(file_control_id(file.id))]
        if control:
            events += control
            events += [
                _event_row(e)
                for e in store.events.get(account_id(account))
                if isinstance(e, Account.CreditsRefunded) and e.file_id == str(file.id)
            ]
            events.sort(key=lambda row: str(row["at"]))
        batches = int(file.summary.get("batches", 0)) if file.summary else 0
        counts: dict[str, int] = {}
        for number in range(batches):
            bid = batch_id(file.id, number)
            for aggregate_id in (bid, dispatch_log_id(bid), delivery_log_id(bid)):
                for event in store.events.get(aggregate_id):
                    key = type(event).__name__
                    if isinstance(event, DeliveryLog.DeliveryReported):
                        key = f"DeliveryReported.{event.status}"
                    elif isinstance(event, DispatchLog.MessageExpired) and event.reason != "end":
                        key = f"MessageExpired.{event.reason}"
                    counts[key] = counts.get(key, 0) + 1
        history.append({"file_id": str(file.id), "receipt": receipt, "events": events, "batch_events": counts})
    return history


def validation_history(store: SmsStore, models: ReadModels, account: str, name: str) -> list[dict[str, Any]]:
    """Every validation of the name (uploads into Validate): its FileValidated event."""
    return [
        {
            "validation_id": row["validation_id"],
            "received_at": row["received_at"],
            "events": [_event_row(e) for e in store.events.get(UUID(row["validation_id"]))],
        }
        for row in models.validations(account=account, name=name)
    ]


def cmd_events(args: argparse.Namespace) -> int:
    settings = _settings(args)
    with _store(settings) as store:
        account = args.account
        models = _models(settings, store)
        if account is None:
            owners = sorted(
                {row["account"] for row in models.files(name=args.file)}
                | {row["account"] for row in models.validations(name=args.file)}
            )
            if len(owners) > 1:
                models.close()
                raise CliError(f"several accounts have a file {args.file!r}: add --account ({', '.join(owners)})")
            if not owners:
                models.close()
                raise CliError(f"no file named {args.file!r}")
            account = owners[0]
        history = file_history(store, account, args.file)
        validations = validation_history(store, models, account, args.file)
        models.close()
    if args.json:
        history = [*history, *validations]
        print(json.dumps(history, indent=2, default=str))
        return 0
    if not history and not validations:
        raise CliError(f"no file named {args.file!r} for account {account!r}")
    for validation in validations:
        print(f"{args.file} (account {account}, validated, validation id {validation['validation_id']})")
        for event in validation["events"]:
            details = ", ".join(
                f"{k}={v}" for k, v in event.items() if k not in ("event", "at") and v not in (None, [], {})
            )
            print(f"  {event['at']}  {event['event']:<16} {details}")
    for receipt in history:
        print(f"{args.file} (account {account}, receipt {receipt['receipt']}, file id {receipt['file_id']})")
        for event in receipt["events"]:
            details = ", ".join(
                f"{k}={v}" for k, v in event.items() if k not in ("event", "at") and v not in (None, [], {})
            )
            print(f"  {event['at']}  {event['event']:<16} {details}")
        for name, count in sorted(receipt["batch_events"].items()):
            print(f"  {'':32} {name:<16} x{count}")
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    """Rebuild a file's report from its events and compare it with the filed one.

    Exit status: 0 when the filed report matches, 1 when it differs or is missing (the customer may
    delete filed reports; the events still hold it), 2 for an unknown file."""
    from eventsourcing.application import AggregateNotFoundError

    from actors.file import file_report

    if args.all:
        return cmd_replay_all(args)
    if args.file is None:
        raise CliError("give --file NAME, or --all for every file of the account")
    settings = _settings(args)
    with _store(settings) as store:
        try:
            file = store.file_by_name(args.account, args.file, args.receipt)
        except AggregateNotFoundError:
            which = f" (receipt {args.receipt})" if args.receipt is not None else ""
            raise CliError(f"no file named {args.file!r}{which} for account {args.account!r}") from None
        if file.status != "completed":
            raise CliError(f"{args.file} is still {file.status}")
        report = file_report(store, file.id)
    folder_path = settings.account_root(args.account) / ("Processed" if report["status"] == "processed" else "Errors")
    name = folders.outputs_name(folder_path, args.file, str(file.id))
    if name != args.file:
        report["filed_as"] = name  # filed under another name: an earlier file's outputs held its own
    filed = folders.report_path(folder_path, name)
    filed_report = _read_filed_report(filed)
    verdict = "missing" if filed_report is None else "yes" if filed_report == report else "no"
    if args.json:
        print(json.dumps({"report": report, "matches_filed_report": verdict == "yes", "filed_report": verdict}, indent=2))
    else:
        print(json.dumps(report, indent=2))
        message = {
            "yes": f"# matches {filed}: yes",
            "no": f"# matches {filed}: NO (the filed report differs from its events)",
            "missing": f"# {filed} is missing (deleted?): the report above is rebuilt from the events",
        }[verdict]
        print(message, file=sys.stderr)
    return 0 if verdict == "yes" else 1


def cmd_replay_all(args: argparse.Namespace) -> int:
    """Every file of an account (the last upload of each name, whose report is the one filed):
    rebuild its report from the events and compare it with the filed one. Exit 1 when any report
    differs or is missing."""
    from actors.file import file_report

    if args.file is not None or args.receipt is not None:
        raise CliError("--all replays every file of the account: leave out --file and --receipt")
    settings = _settings(args)
    rows: list[dict[str, Any]] = []
    with _store(settings) as store:
        store.account(args.account)
        models = _models(settings, store)
        files = models.files(account=args.account)
        models.close()
        last: dict[str, dict[str, Any]] = {}
        for row in files:
            if last.get(row["name"], {}).get("receipt", 0) < row["receipt"]:
                last[row["name"]] = row
        progress = _Progress("replay")
        for done, (name, row) in enumerate(sorted(last.items()), 1):
            if row["completed_at"] is None:
                rows.append({"file": name, "receipt": row["receipt"], "status": row["status"], "filed_report": "in progress"})
                continue
            report = file_report(store, UUID(row["file_id"]))
            folder_path = settings.account_root(args.account) / ("Processed" if report["status"] == "processed" else "Errors")
            filed_as = folders.outputs_name(folder_path, name, row["file_id"])
            if filed_as != name:
                report["filed_as"] = filed_as  # filed beside an earlier file's outputs
            filed = _read_filed_report(folders.report_path(folder_path, filed_as))
            verdict = "missing" if filed is None else "yes" if filed == report else "no"
            rows.append({"file": name, "receipt": row["receipt"], "status": report["status"], "filed_report": verdict})
            progress.update(f"{done:,} of {len(last):,} files")
        progress.done(f"{len(last):,} files")
    bad = [row for row in rows if row["filed_report"] in ("no", "missing")]
    if args.json:
        print(json.dumps({"account": args.account, "files": rows, "all_match": not bad}, indent=2))
    else:
        _print_table(rows, ["file", "receipt", "status", "filed_report"])
        if bad:
            print(
                f"{len(bad)} of {len(rows)} filed reports do not match their events "
                f"({sum(r['filed_report'] == 'no' for r in bad)} differ, {sum(r['filed_report'] == 'missing' for r in bad)} missing)"
            )
        else:
            print(f"all {len(rows)} filed reports match their events")
    return 1 if bad else 0


def _read_filed_report(path: Path) -> Any:
    """The filed report's JSON, or None when there is none (a report that is not JSON compares
    as different, not as missing)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        return json.loads(text)
    except ValueError:
        return {"unreadable": text[:200]}


def cmd_readmodels_rebuild(args: argparse.Namespace) -> int:
    from eventstore.history import History

    settings = _settings(args)
    with _store(settings) as store:
        if args.verify:
            return _verify_readmodels(args, settings, store)
        models = ReadModels(settings.readmodels_db)
        position = models.rebuild(store)
        models.close()
        history = History(settings.history_db)
        try:
            history.rebuild(store)
        finally:
            history.close()
    _emit(args, {"position": position}, f"read models and history rebuilt up to event {position}")
    return 0


def _overall(digests: dict[str, tuple[int, str]]) -> str:
    import hashlib

    lines = "".join(f"{table}:{count}:{digest}\n" for table, (count, digest) in sorted(digests.items()))
    return hashlib.sha256(lines.encode()).hexdigest()


def _verify_readmodels(args: argparse.Namespace, settings: Settings, store: SmsStore) -> int:
    """Build every read model afresh beside the live ones (which are left as they are), each up to
    the live one's position, and compare their digests table by table."""
    import shutil
    import tempfile

    from eventstore.history import History, table_digests

    live_models = ReadModels(settings.readmodels_db)
    live_models.catch_up(store)
    live_history = History(settings.history_db)
    scratch = Path(tempfile.mkdtemp(prefix="verify-", dir=settings.data_dir))
    results: dict[str, Any] = {}
    try:
        _catch_up_history(live_history, store)
        for name, conn, position_of, fresh_path in (
            ("readmodels", live_models.db.conn, live_models.position, scratch / "readmodels.db"),
            ("history", live_history.conn, live_history.position, scratch / "history.db"),
        ):
            conn.execute("BEGIN")  # one snapshot of the live database: the server may be writing
            try:
                position = position_of()
                live = table_digests(conn)
            finally:
                conn.execute("COMMIT")
            if name == "readmodels":
                fresh_models = ReadModels(fresh_path)
                fresh_models.catch_up(store, until=position)
                fresh = table_digests(fresh_models.db.conn)
                fresh_models.close()
            else:
                fresh_history = History(fresh_path)
                fresh_history.catch_up(store, until=position)
                fresh = table_digests(fresh_history.conn)
                fresh_history.close()
            tables = {
                table: {
                    "rows": live.get(table, (0, ""))[0],
                    "live": live.get(table, (0, "-"))[1],
                    "fresh": fresh.get(table, (0, "-"))[1],
                    "fresh_rows": fresh.get(table, (0, ""))[0],
                    "equal": live.get(table) == fresh.get(table),
                }
                for table in sorted(set(live) | set(fresh))
            }
            results[name] = {
                "position": position,
                "tables": tables,
                "live": _overall(live),
                "fresh": _overall(fresh),
                "equal": live == fresh,
            }
    finally:
        live_models.close()
        live_history.close()
        shutil.rmtree(scratch, ignore_errors=True)
    equal = all(result["equal"] for result in results.values())
    if args.json:
        print(json.dumps({"equal": equal, "databases": results}, indent=2))
    else:
        for name, result in results.items():
            print(f"{name}.db up to event {result['position']}:")
            print(f"  {'TABLE':<14} {'ROWS':>9}  {'LIVE':<16}  {'FRESH':<16}")
            for table, row in result["tables"].items():
                mark = "" if row["equal"] else f"   DIFFERENT ({row['fresh_rows']} rows fresh)"
                print(f"  {table:<14} {row['rows']:>9}  {row['live'][:16]:<16}  {row['fresh'][:16]:<16}{mark}")
            print(f"  {'overall':<14} {'':>9}  {result['live'][:16]:<16}  {result['fresh'][:16]:<16}")
        print("live and fresh are equal" if equal else "live and fresh DIFFER: rebuild with 'sftpsms readmodels rebuild'")
    return 0 if equal else 1


def _log_progress(what: str) -> tuple[_Progress, Any]:
    progress = _Progress(what)
    return progress, lambda position, until: progress.update(f"read the event log to {position:,} of {until:,}")


def cmd_audit_export(args: argparse.Namespace) -> int:
    """Write one account's month as an audit bundle (JSONL + CSV per part, manifest.json)."""
    from eventstore.audit import AuditError, check_month, export_bundle

    settings = _settings(args)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CliError(f"--out {out} is a file, not a directory")
    try:
        check_month(args.month)
        with _store(settings) as store:
            store.account(args.username)
            progress, report = _log_progress("audit")
            manifest = export_bundle(store, args.username, args.month, out, report)
            progress.done("done")
    except AuditError as error:
        raise CliError(str(error)) from None
    except OSError as error:
        raise CliError(f"cannot write the bundle into {out}: {error.strerror or error}") from None
    counts = {name: part["count"] for name, part in manifest["parts"].items()}
    if args.json:
        print(json.dumps({"out": str(out), **manifest}))
    else:
        print(f"audit bundle of {args.username} for {args.month} in {out}:")
        for name, count in counts.items():
            print(f"  {name:<12} {count:>9} rows  ({name}.jsonl, {name}.csv)")
        positions = manifest["positions"]
        print(f"  event-log positions {positions['first']} to {positions['last']}; digests in {out / 'manifest.json'}")
    return 0


def cmd_audit_verify(args: argparse.Namespace) -> int:
    """Re-derive a bundle from the events; exit 1 when any part does not match."""
    from eventstore.audit import AuditError, read_manifest, verify_bundle

    settings = _settings(args)
    bundle = Path(args.bundle)
    try:
        manifest = read_manifest(bundle)
        with _store(settings) as store:
            store.account(manifest["account"])
            progress, report = _log_progress("audit")
            results = verify_bundle(store, bundle, report)
            progress.done("done")
    except AuditError as error:
        raise CliError(str(error)) from None
    matches = all(result["match"] for result in results.values())
    if args.json:
        print(json.dumps({"bundle": str(bundle), "account": manifest["account"], "month": manifest["month"],
                          "match": matches, "parts": results}))
    else:
        print(f"audit bundle {bundle} ({manifest['account']}, {manifest['month']}):")
        for name, result in results.items():
            print(f"  {name:<12} {'match' if result['match'] else 'MISMATCH'}")
            for problem in result["problems"]:
                print(f"    {problem}")
        print("every part matches its events" if matches else "the bundle does NOT match the events")
    return 0 if matches else 1


class _Progress:
    """A progress line on stderr, at most once a second and only for runs that last."""

    def __init__(self, what: str) -> None:
        import time

        self.what = what
        self.clock = time.monotonic
        self.started = self.last = self.clock()
        self.shown = False

    def update(self, text: str) -> None:
        now = self.clock()
        if now - self.last >= 1.0 and now - self.started >= 1.0:
            self.last = now
            self.shown = True
            print(f"{self.what}: {text}", file=sys.stderr, flush=True)

    def done(self, text: str) -> None:
        if self.shown:
            print(f"{self.what}: {text}", file=sys.stderr, flush=True)


def _history_time(text: str | None, flag: str) -> str | None:
    """An ISO date or time (UTC unless it says otherwise) as the history compares it."""
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise CliError(f"{flag} takes an ISO date or time, e.g. 2026-11-01 or 2026-11-01T08:00Z") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat()


def _catch_up_history(history: Any, store: SmsStore) -> None:
    progress = _Progress("history")
    until = store.last_position()
    while True:
        position, done = history.catch_up(store, until=until, max_pages=1)
        if done:
            break
        progress.update(f"following the event log, {position:,} of {until:,}")
    progress.done(f"caught up with the event log at {until:,}")


HISTORY_TABLE = (
    ("queued_at", 25), ("account", 12), ("file", 20), ("index", 7), ("msisdn", 15), ("customer_id", 12),
    ("status", 9), ("parts", 5), ("final_at", 25), ("replies", 7),
)
HISTORY_CSV = (
    "message_id", "account", "file", "file_id", "receipt", "index", "msisdn", "customer_id", "text", "parts",
    "sender_id", "queued_at", "submitted_at", "gateway", "gateway_id", "status", "error", "final_at", "refunded",
    "replies",
)


def _reply_text(replies: list[dict[str, Any]]) -> str:
    return " | ".join(r["text"] + (" (opt-out)" if r["opt_out"] else "") for r in replies)


def cmd_history(args: argparse.Namespace) -> int:
    """Stream the messages a query selects, a page at a time (memory stays flat on any range)."""
    import csv

    from eventstore.history import History, HistoryError, HistoryQuery

    if args.msisdn is None and args.customer_id is None and args.file is None and args.account is None:
        raise CliError("give at least one of --msisdn, --customer-id, --file and --account")
    fmt = "json" if args.json else args.format
    since, until = _history_time(args.since, "--since"), _history_time(args.until, "--until")
    settings = _settings(args)
    with _store(settings) as store:
        country = store.account(args.account).country if args.account else args.country.upper()
        msisdn = None
        if args.msisdn is not None:
            msisdn = normalise_msisdn(args.msisdn, country)
            if msisdn is None:
                raise CliError(f"{args.msisdn!r} is not a phone number")
        history = History(settings.history_db)
        try:
            _catch_up_history(history, store)
            file_ids: list[str | None] = [None]
            if args.file is not None:
                found = history.files(name=args.file, account=args.account)
                owners = sorted({f["account"] for f in found})
                if len(owners) > 1:
                    raise CliError(f"several accounts have a file {args.file!r}: add --account ({', '.join(owners)})")
                if not found:
                    which = f" for account {args.account!r}" if args.account else ""
                    raise CliError(f"no file named {args.file!r}{which}")
                file_ids = [f["file_id"] for f in found]
            out = sys.stdout
            writer: Any = None
            if fmt == "csv":
                writer = csv.writer(out, lineterminator="\n")
                writer.writerow(HISTORY_CSV)
            elif fmt == "table":
                print("  ".join(name.upper().ljust(width) for name, width in HISTORY_TABLE))
            progress = _Progress("history")
            count = 0
            for file_id in file_ids:
                query = HistoryQuery(
                    msisdn=msisdn, customer_id=args.customer_id, file_id=file_id, account=args.account,
                    since=since, until=until, status=args.status,
                )
                for message in history.iter_messages(query):
                    if fmt == "json":
                        out.write(json.dumps(message) + "\n")
                    elif fmt == "csv":
                        writer.writerow(
                            [_reply_text(message["replies"]) if c == "replies" else message[c] for c in HISTORY_CSV]
                        )
                    else:
                        cells = {**message, "replies": len(message["replies"])}
                        out.write(
                            "  ".join(
                                str(cells[name] if cells[name] is not None else "-").ljust(width)
                                for name, width in HISTORY_TABLE
                            ).rstrip()
                            + "\n"
                        )
                    count += 1
                    if count % 1000 == 0:
                        progress.update(f"{count:,} messages")
            progress.done(f"{count:,} messages")
            if fmt == "table" and count == 0:
                print("(none)")
        except HistoryError as error:
            raise CliError(str(error)) from None
        finally:
            history.close()
    return 0


def _emit(args: argparse.Namespace, data: dict[str, Any], text: str) -> None:
    print(json.dumps(data) if getattr(args, "json", False) else text)


# ---- parser -----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--data-dir",
        default=os.environ.get("SFTPSMS_DATA_DIR", "var"),
        help="data directory: event store, read models, account folders (default ./var, or $SFTPSMS_DATA_DIR)",
    )
    common.add_argument(
        "--store", default=None, metavar="URL",
        help="the event store: postgresql://USER@HOST:PORT/DATABASE, shared by several nodes (default: SQLite "
        "in the data directory, or $SFTPSMS_STORE)",
    )
    common.add_argument(
        "--node", default=None, metavar="NAME",
        help="this node's name among several on one PostgreSQL store (default: the host name, or $SFTPSMS_NODE); "
        "its read models live in DATA/nodes/NAME",
    )
    common.add_argument("--json", action="store_true", help="print JSON for scripts")
    parser = argparse.ArgumentParser(
        prog="sftpsms",
        description="SFTP-to-SMS: businesses drop JSON files of contacts into Send_SMS; the service "
        "validates, scrubs opt-outs, checks credits, sends, and files each upload under Processed or "
        "Errors with a report. Every state change is an event; admin commands work while it runs.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", parents=[common], help="run the service (SFTP door, actors, dispatcher)")
    serve.add_argument("--sftp-host", default=None, help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--sftp-port", type=int, default=None, help="SFTP port (default 2222; 0 = any free port)")
    serve.add_argument("--ftp-port", type=int, default=None, help="also open the FTP door on this port (0 = any free port)")
    serve.add_argument("--http-host", default=None, help="address of the inbound HTTP endpoint (default 127.0.0.1)")
    serve.add_argument(
        "--http-port", type=int, default=None,
        help="open the inbound HTTP endpoint (gateway receipts and replies) on this port (0 = any free port)",
    )
    serve.add_argument("--ftp-cert", default=None, help="PEM certificate: the FTP door then requires explicit FTPS")
    serve.add_argument("--ftp-key", default=None, help="PEM private key, if not in the certificate file")
    serve.add_argument(
        "--ftp-passive-ports", default=None, metavar="FIRST-LAST",
        help="FTP passive data ports, to open in the firewall (default 60000-60099)",
    )
    serve.add_argument("--send-rate", type=float, default=None, help="SMS parts per second for the whole service")
    serve.add_argument("--smtp-host", default=None, help="send status emails through this SMTP server (default: .eml files in DATA/outbox)")
    serve.add_argument("--smtp-port", type=int, default=None, help="SMTP port (default 25)")
    serve.add_argument("--smtp-starttls", action="store_true", help="upgrade the SMTP connection with STARTTLS")
    serve.add_argument("--smtp-user", default=None, help="SMTP login (password from $SFTPSMS_SMTP_PASSWORD)")
    serve.add_argument("--mail-from", default=None, help="sender address of status emails")
    serve.add_argument("--demo", action="store_true", help="create (once) and print a demo account with credits")
    serve.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    serve.set_defaults(func=cmd_serve)

    account = sub.add_parser("account", help="create and inspect accounts").add_subparsers(dest="action", required=True)
    create = account.add_parser("create", parents=[common], help="create an account")
    create.add_argument("username", type=_account_name)
    create.add_argument("--password", required=True, help="stored as an argon2 hash")
    create.add_argument("--email", help="where status emails go when a file names none")
    create.add_argument("--country", default="ZA", help="default country for national numbers (default ZA)")
    create.add_argument("--created-at", help="YYYY-MM-DD; before 2023-06-06 every channel is active (legacy rule)")
    create.add_argument("--parent", type=_account_name, help="create a sub-account of this account (own credentials, folders, credits)")
    create.add_argument("--allow-sender-id", action="store_true", help="may set a custom SenderID")
    create.set_defaults(func=cmd_account_create)
    show = account.add_parser("show", parents=[common], help="show an account's current state")
    show.add_argument("username", type=_account_name)
    show.set_defaults(func=cmd_account_show)
    rate = account.add_parser(
        "rate",
        parents=[common],
        help="set an account's sending rate",
        description="Cap how fast an account's messages go out, in SMS parts per second (a 3-part "
        "message costs 3). The service-wide and per-gateway rates still apply; accounts share "
        "what is left fairly. Takes effect within a second, without a restart.",
    )
    rate.add_argument("username", type=_account_name)
    rate.add_argument("rate", help="parts per second, or 'default' for the service's account rate")
    rate.set_defaults(func=cmd_account_rate)
    quiet = account.add_parser(
        "quiet-hours",
        parents=[common],
        help="hold messages during the recipient's local night (or 'off')",
        description="Set a window of local time at the recipient's location (from the number's time "
        "zone in libphonenumber's metadata) when none of the account's messages is submitted, e.g. "
        "21:00-08:00 (US rules: no marketing texts before 8am or after 9pm). A number whose prefix "
        "spans several zones waits until it is outside the window in all of them; one with no known "
        "zone takes the account's country's zones. Held messages go when the window opens, within "
        "the file's End; those that cannot expire at End and their credits are refunded. Off by "
        "default; takes effect within a second, without a restart.",
    )
    quiet.add_argument("username", type=_account_name)
    quiet.add_argument("window", help="HH:MM-HH:MM in the recipient's local time (an end before the start is the next day), or 'off'")
    quiet.add_argument(
        "--days", default=None,
        help="local weekdays a window starts on, e.g. mon,tue,wed,thu,fri (default every day; "
        "fri with 21:00-08:00 is Friday 21:00 to Saturday 08:00)",
    )
    quiet.set_defaults(func=cmd_account_quiet_hours)
    unicode = account.add_parser(
        "unicode",
        parents=[common],
        help="let an account send text outside GSM 03.38 as UCS-2",
        description="Off (the default): a message with a character outside GSM 03.38 is a contact "
        "error (File.ParseError). On: such a message is sent as UCS-2 (SMPP data_coding 8, "
        "\"encoding\": \"ucs2\" on HTTP), 70 characters for one SMS and 67 per part when longer "
        "(an emoji counts two); credits = parts. GSM text is sent as GSM either way.",
    )
    unicode.add_argument("username", type=_account_name)
    unicode.add_argument("state", choices=["on", "off"])
    unicode.set_defaults(func=cmd_account_unicode)
    replies = account.add_parser(
        "replies",
        parents=[common],
        help="HELP answers and the STOP confirmation",
        description="Answer inbound replies: a reply starting with a HELP keyword (default HELP, INFO) "
        "gets the HELP text; one that opts the number out (STOP, ...) gets the STOP confirmation, its "
        "last message. Each answer is an SMS through the gateway the reply came from, charged like any "
        "message (not sent, and recorded so, without credits). Off until a text is set. CTIA: the "
        "confirmation names the brand, says no further messages will be sent and how to get help, e.g. "
        "'ACME: you are unsubscribed and will get no more messages. Reply HELP for help.'",
    )
    replies.add_argument("username", type=_account_name)
    replies.add_argument(
        "--help-text", default=None, metavar="TEXT", help="the answer to HELP (GSM 03.38, or UCS-2 when unicode is on; at most 3 parts)"
    )
    replies.add_argument("--stop-text", default=None, metavar="TEXT", help="the STOP confirmation")
    replies.add_argument("--help-keywords", default=None, metavar="WORDS", help="comma-separated, default HELP,INFO")
    replies.add_argument("--off", action="store_true", help="turn both answers off")
    replies.set_defaults(func=cmd_account_replies)

    apikey = sub.add_parser("apikey", help="API keys: a key activates a channel").add_subparsers(dest="action", required=True)
    kcreate = apikey.add_parser("create", parents=[common], help="create a key; prints its id and secret once")
    kcreate.add_argument("username", type=_account_name)
    kcreate.add_argument("--channel", required=True, choices=CHANNELS)
    kcreate.set_defaults(func=cmd_apikey_create)
    klist = apikey.add_parser("list", parents=[common], help="an account's keys")
    klist.add_argument("username", type=_account_name)
    klist.set_defaults(func=cmd_apikey_list)
    krevoke = apikey.add_parser("revoke", parents=[common], help="revoke a key; its open sessions are closed")
    krevoke.add_argument("key_id")
    krevoke.set_defaults(func=cmd_apikey_revoke)

    sshkey = sub.add_parser("sshkey", help="SSH public keys for SFTP logins").add_subparsers(dest="action", required=True)
    sadd = sshkey.add_parser("add", parents=[common], help="let this public key log in as the account (SFTP)")
    sadd.add_argument("username", type=_account_name)
    sadd.add_argument("file", help="an OpenSSH public key file, e.g. ~/.ssh/id_ed25519.pub")
    sadd.set_defaults(func=cmd_sshkey_add)

    senderid = sub.add_parser("senderid", help="sender IDs an account may use").add_subparsers(dest="action", required=True)
    sallow = senderid.add_parser("allow", parents=[common], help="allow a SenderID in this account's files")
    sallow.add_argument("username", type=_account_name)
    sallow.add_argument("sender_id", metavar="NAME")
    sallow.set_defaults(func=cmd_senderid_allow)

    credits = sub.add_parser("credits", help="manage credits").add_subparsers(dest="action", required=True)
    add = credits.add_parser("add", parents=[common], help="add credits to an account")
    add.add_argument("username", type=_account_name)
    add.add_argument("amount", type=int)
    add.set_defaults(func=cmd_credits_add)
    transfer = credits.add_parser("transfer", parents=[common], help="move credits from an account to its sub-account")
    transfer.add_argument("parent", type=_account_name)
    transfer.add_argument("sub", type=_account_name)
    transfer.add_argument("amount", type=int)
    transfer.set_defaults(func=cmd_credits_transfer)

    optout = sub.add_parser("optout", help="manage an account's opt-out list").add_subparsers(dest="action", required=True)
    for action, text in (("add", "opt numbers out"), ("remove", "opt numbers back in")):
        p = optout.add_parser(action, parents=[common], help=text)
        p.add_argument("username", type=_account_name)
        p.add_argument("msisdns", nargs="+", metavar="MSISDN", help="international or national numbers")
        p.set_defaults(func=cmd_optout)

    route = sub.add_parser("route", help="route prefixes: numbers with one have a network").add_subparsers(
        dest="action", required=True
    )
    radd = route.add_parser("add", parents=[common], help="route numbers starting with PREFIX")
    radd.add_argument("prefix", help="international digits, e.g. 2799")
    radd.add_argument(
        "--gateway", default="simulator", help="the gateway these numbers are sent through (gateways.toml)"
    )
    radd.set_defaults(func=cmd_route_add)
    rlist = route.add_parser("list", parents=[common], help="list route prefixes")
    rlist.set_defaults(func=cmd_route_list)

    webhook = sub.add_parser(
        "webhook", help="webhooks: delivery statuses and replies POSTed to a URL, signed"
    ).add_subparsers(dest="action", required=True)
    wadd = webhook.add_parser("add", parents=[common], help="POST an account's events to URL; prints the signing secret once")
    wadd.add_argument("username", type=_account_name)
    wadd.add_argument("url")
    wadd.add_argument("--events", default="delivery,reply", help="which events: delivery, reply or both (default)")
    wadd.set_defaults(func=cmd_webhook_add)
    wlist = webhook.add_parser("list", parents=[common], help="an account's webhooks with delivered/failed counts")
    wlist.add_argument("username", type=_account_name)
    wlist.set_defaults(func=cmd_webhook_list)
    wremove = webhook.add_parser("remove", parents=[common], help="stop POSTing to URL")
    wremove.add_argument("username", type=_account_name)
    wremove.add_argument("url")
    wremove.set_defaults(func=cmd_webhook_remove)
    wrotate = webhook.add_parser(
        "rotate", parents=[common], help="give URL a new signing secret; prints it once",
        description="Replace a webhook's signing secret. POSTs signed from then on use the new one "
        "(the old one stops verifying them): update the receiver first or accept both for a while.",
    )
    wrotate.add_argument("username", type=_account_name)
    wrotate.add_argument("url")
    wrotate.set_defaults(func=cmd_webhook_rotate)
    wreplay = webhook.add_parser(
        "replay",
        parents=[common],
        help="POST a range of events again: same webhook ids, same bodies",
        description="Send an account's delivery statuses and replies again to its webhooks, with the "
        "webhook ids and bodies of the first time (receivers de-duplicate by webhook-id). A bound is "
        "a notification position (digits) or an ISO time compared with the events' 'at'.",
    )
    wreplay.add_argument("username", type=_account_name)
    wreplay.add_argument("--since", required=True, metavar="TIME|POSITION")
    wreplay.add_argument("--until", metavar="TIME|POSITION")
    wreplay.add_argument("--url", help="only this webhook")
    wreplay.set_defaults(func=cmd_webhook_replay)

    files = sub.add_parser("files", parents=[common], help="file outcomes")
    files.add_argument("--account", type=_account_name, help="only this account's files")
    files.add_argument("--with-subaccounts", action="store_true", help="with --account: its sub-accounts' files too")
    files.add_argument(
        "--validations",
        action="store_true",
        help="list the uploads into Validate instead (checked, never sent): valid or invalid, what they would queue and need",
    )
    files.set_defaults(func=cmd_files)
    files_actions = files.add_subparsers(dest="action", required=False)
    reprocess = files_actions.add_parser(
        "reprocess",
        parents=[common],
        help="try a quarantined file (InternalServerError in Errors, or held in work/) again, once its cause is fixed",
    )
    reprocess.add_argument("account")
    reprocess.add_argument("name")
    reprocess.set_defaults(func=cmd_files_reprocess)
    control_help = {
        "cancel": "stop a processed file: its messages not yet sent expire now and their credits are refunded "
        "(messages already at the gateway are reported as they end); a cancelled file cannot be resumed",
        "pause": "hold a processed file's unsent messages until it is resumed (its End still applies: "
        "messages unsent at End expire with their credits refunded)",
        "resume": "send a paused file's unsent messages again",
    }
    for control_action, text in control_help.items():
        control = files_actions.add_parser(
            control_action,
            parents=[common],
            help={
                "cancel": "stop a processed file: its unsent messages expire, their credits refunded",
                "pause": "hold a processed file's unsent messages until resumed (End still applies)",
                "resume": "send a paused file's unsent messages again",
            }[control_action],
            description=f"{text[0].upper()}{text[1:]}. Waits until the running service honours it (no message "
            "of the file is submitted after this returns) and rewrites the file's report. Exit 0 once honoured, "
            "1 when no running service honoured it within --wait (it stays recorded), 2 when refused.",
        )
        control.add_argument("account", type=_account_name)
        control.add_argument("name", help="the file's name as uploaded (the latest processed upload of it)")
        control.add_argument("--wait", type=float, default=30.0, metavar="SECONDS", help="how long to wait for the service (default 30)")
        control.set_defaults(func=cmd_files_control)

    events = sub.add_parser("events", parents=[common], help="the event history of a file")
    events.add_argument("--file", required=True, metavar="NAME")
    events.add_argument("--account", type=_account_name, help="needed when several accounts have a file of that name")
    events.set_defaults(func=cmd_events)

    replay = sub.add_parser(
        "replay",
        parents=[common],
        help="rebuild a file's report from its events and compare",
        description="Rebuild a file's report from its events and compare it with the report filed in "
        "Processed or Errors: yes, NO (it differs) or missing (deleted). With --all, every file of "
        "the account at once (the last upload of each name). Exit 1 when any report differs or is missing.",
    )
    replay.add_argument("--account", required=True, type=_account_name)
    replay.add_argument("--file", metavar="NAME")
    replay.add_argument("--all", action="store_true", help="every file of the account, one line each")
    replay.add_argument("--receipt", type=int, help="which upload of that name (default the last)")
    replay.set_defaults(func=cmd_replay)

    history = sub.add_parser(
        "history",
        parents=[common],
        help="every message sent to a number, a customerId, in a file or by an account",
        description="The message-level history: each message with its file, text, sender ID, when it was "
        "queued, submitted and got its final status, the gateway and its id, the error, the refund of "
        "an expired message, and its replies. Give at least one of --msisdn, --customer-id, --file and "
        "--account (together they narrow each other). Times are ISO dates or times, UTC unless they say "
        "otherwise; --since is inclusive, --until exclusive, both compared with when the message was "
        "queued. Output streams (any range in flat memory); --format json writes one JSON object per line.",
    )
    history.add_argument("--msisdn", metavar="NUMBER", help="international (+27..., 0027...) or national (083...)")
    history.add_argument("--customer-id", metavar="ID", help="the contact's customerId from the file")
    history.add_argument("--file", metavar="NAME", help="a file's messages in contact order (every upload of the name)")
    history.add_argument("--account", metavar="USER", type=_account_name, help="an account's messages (its country reads national numbers)")
    history.add_argument("--since", metavar="TIME", help="queued at or after TIME")
    history.add_argument("--until", metavar="TIME", help="queued before TIME")
    history.add_argument("--status", help="queued, submitted, delivered, failed or expired")
    history.add_argument("--format", choices=("table", "json", "csv"), default="table", help="output format (default table)")
    history.add_argument("--country", default="ZA", help="country of national numbers without --account (default ZA)")
    history.set_defaults(func=cmd_history)

    audit = sub.add_parser(
        "audit", help="audit bundles: an account's month from the events, with digests"
    ).add_subparsers(dest="action", required=True)
    aexport = audit.add_parser(
        "export",
        parents=[common],
        help="write an account's month as JSONL and CSV with a manifest of SHA-256 digests",
        description="Write the messages queued, their submissions, receipts (delivery reports and "
        "expiries with their refunds), replies, the credit ledger (with the running balance) and the "
        "opt-out changes of one account's month, each as PART.jsonl and PART.csv, and manifest.json "
        "with each file's SHA-256 and size, the row counts and the event-log positions covered. Rows "
        "belong to the month of their event (UTC). Derived from the events alone: the same month "
        "exported twice gives byte-identical bundles.",
    )
    aexport.add_argument("username", type=_account_name)
    aexport.add_argument("--month", required=True, metavar="YYYY-MM")
    aexport.add_argument("--out", required=True, metavar="DIR", help="directory for the bundle (created if missing)")
    aexport.set_defaults(func=cmd_audit_export)
    averify = audit.add_parser(
        "verify",
        parents=[common],
        help="re-derive a bundle from the events: match or mismatch per part",
        description="Read DIR/manifest.json, derive the same account's month again from the events, "
        "and compare each part with the manifest and with its files on disk. Exit 0 when every part "
        "matches, 1 when any does not.",
    )
    averify.add_argument("bundle", metavar="DIR")
    averify.set_defaults(func=cmd_audit_verify)

    readmodels = sub.add_parser("readmodels", help="read-model maintenance").add_subparsers(dest="action", required=True)
    rebuild = readmodels.add_parser(
        "rebuild",
        parents=[common],
        help="drop and rebuild every read model (and the history) from the events",
        description="Drop the read models and the message history and project the whole event log "
        "again. With --verify nothing is dropped: every read model is built afresh in a scratch "
        "database up to the live one's position and each table's rows are compared by SHA-256 "
        "(exit 1 when any differ).",
    )
    rebuild.add_argument(
        "--verify", action="store_true", help="compare the live read models with fresh ones; print a digest per table"
    )
    rebuild.set_defaults(func=cmd_readmodels_rebuild)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result: int = args.func(args)
        return result
    except (CliError, BadName) as error:
        print(f"sftpsms: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())


