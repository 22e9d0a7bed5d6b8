"""HELP answers and STOP confirmations: real outgoing SMS through the gateway the reply came from,
charged, recorded as events, and sent once per inbound reply (duplicates, restarts).

Through the real service: the simulator's own replies, and replies posted to the inbound HTTP
endpoint with the answers arriving at a real provider HTTP server (tests/provider.py)."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

import httpx
import pytest

from eventstore.domain import (
    Account,
    AutoReply,
    ContactBatch,
    DeliveryLog,
    DispatchLog,
    account_id,
    auto_reply_id,
    batch_id,
    delivery_log_id,
    dispatch_log_id,
    message_id,
)
from sftpsms.autoreply import (
    AutoReplies,
    AutoReplyInvalid,
    answer_for,
    check_answer_text,
    check_keywords,
    parse_keywords,
)
from tests.provider import Provider, running_provider
from tests.service import Service, running_service
from tests.smsc_server import SMSC_DIR, install_smsc

T = TypeVar("T")
HELP_TEXT = "ACME: help at acme.test or 0800 123 456. Msg&data rates may apply. Reply STOP to opt out."
STOP_TEXT = "ACME: you are unsubscribed and will get no more messages. Reply HELP for help."
OPTOUT_WORDS = ("STOP", "UNSUBSCRIBE")
NUMBERS = ["27831234501", "27831234502", "27831234503"]


# ---- the rules (sftpsms.autoreply) ----------------------------------------------------------------


def test_a_help_keyword_gets_the_help_text_and_stop_the_confirmation() -> None:
    settings = AutoReplies(help_text="H", stop_text="S")
    assert answer_for("help", settings, optout_words=OPTOUT_WORDS, already_opted_out=False) == ("help", "H")
    assert answer_for("Info?", settings, optout_words=OPTOUT_WORDS, already_opted_out=False) == ("help", "H")
    assert answer_for("STOP now", settings, optout_words=OPTOUT_WORDS, already_opted_out=False) == ("stop", "S")
    assert answer_for("helpful, thanks", settings, optout_words=OPTOUT_WORDS, already_opted_out=False) is None


def test_an_opted_out_number_gets_no_answer_at_all() -> None:
    settings = AutoReplies(help_text="H", stop_text="S")
    for text in ("HELP", "STOP"):
        assert answer_for(text, settings, optout_words=OPTOUT_WORDS, already_opted_out=True) is None


def test_an_answer_that_is_off_is_not_sent() -> None:
    assert answer_for("HELP", AutoReplies(stop_text="S"), optout_words=OPTOUT_WORDS, already_opted_out=False) is None
    assert answer_for("STOP", AutoReplies(help_text="H"), optout_words=OPTOUT_WORDS, already_opted_out=False) is None


def test_keywords_are_checked() -> None:
    assert parse_keywords(" help, Aide ,help") == ("HELP", "AIDE")
    for bad in ("", "two words", "x" * 21):
        with pytest.raises(AutoReplyInvalid):
            parse_keywords(bad)
    with pytest.raises(AutoReplyInvalid, match="STOP opts a number out"):
        check_keywords(("HELP", "STOP"), OPTOUT_WORDS)


def test_answer_texts_must_be_sendable_and_short() -> None:
    assert check_answer_text(STOP_TEXT, "STOP", unicode=False) == STOP_TEXT
    for bad in ("  ", "x" * 500):
        with pytest.raises(AutoReplyInvalid):
            check_answer_text(bad, "HELP", unicode=False)
    with pytest.raises(AutoReplyInvalid, match="not in the GSM 03.38 alphabet"):
        check_answer_text("Привет 😀", "HELP", unicode=False)
    assert check_answer_text("Привет 😀", "HELP", unicode=True) == "Привет 😀"  # the account's UCS-2


# ---- the CLI ---------------------------------------------------------------------------------------


def test_the_cli_sets_shows_and_turns_off_the_answers_each_change_one_event(tmp_path: Path) -> None:
    with running_service(tmp_path / "data") as service:
        service.add_account("acme")
        done = service.cli("account", "replies", "acme", "--help-text", HELP_TEXT, "--stop-text", STOP_TEXT, "--json")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["changed"] is True
        again = service.cli("account", "replies", "acme", "--help-text", HELP_TEXT, "--json")
        assert json.loads(again.stdout)["changed"] is False
        keywords = service.cli("account", "replies", "acme", "--help-keywords", "help,aide", "--json")
        assert json.loads(keywords.stdout)["help_keywords"] == ["HELP", "AIDE"]
        shown = json.loads(service.cli("account", "show", "acme", "--json").stdout)
        assert shown["auto_replies"] == {
            "enabled": True, "help_text": HELP_TEXT, "stop_text": STOP_TEXT, "help_keywords": ["HELP", "AIDE"],
        }
        warned = service.cli("account", "replies", "acme", "--stop-text", "ACME: unsubscribed.")
        assert warned.returncode == 0 and "Reply HELP for help" in warned.stdout
        refused = service.cli("account", "replies", "acme", "--help-keywords", "STOP")
        assert refused.returncode == 2 and "opts a number out" in refused.stderr
        off = service.cli("account", "replies", "acme", "--off", "--json")
        assert json.loads(off.stdout)["enabled"] is False
        store = service.store()
        try:
            changes = [e for e in store.events.get(store.account("acme").id) if isinstance(e, Account.AutoRepliesSet)]
        finally:
            store.close()
        assert len(changes) == 4  # set, keywords, stop text, off: the unchanged call added nothing


# ---- helpers ---------------------------------------------------------------------------------------


def wait_for(what: str, probe: Callable[[], T | None], service: Service, timeout: float = 30.0) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout} s\n{service.log()[-3000:]}")


def events_of(service: Service, aggregate: UUID) -> list[Any]:
    store = service.store()
    try:
        return list(store.events.get(aggregate))
    finally:
        store.close()


def balance(service: Service, account: str) -> int:
    store = service.store()
    try:
        return int(store.account(account).balance)
    finally:
        store.close()


def answer_events(service: Service, reply: UUID) -> dict[str, list[Any]]:
    """The answer's own events: its AutoReply, its batch's queueing, submission and receipt."""
    batch = batch_id(reply, 0)
    return {
        "auto_reply": events_of(service, reply),
        "queued": [e for e in events_of(service, batch) if isinstance(e, ContactBatch.MessageQueued)],
        "submitted": [e for e in events_of(service, dispatch_log_id(batch)) if isinstance(e, DispatchLog.MessageSubmitted)],
        "reported": [e for e in events_of(service, delivery_log_id(batch)) if isinstance(e, DeliveryLog.DeliveryReported)],
    }


def upload(service: Service, account: str, name: str, numbers: list[str]) -> UUID:
    contacts = [{"msisdn": n, "customerId": f"C{i}"} for i, n in enumerate(numbers)]
    with service.paramiko(account) as sftp, sftp.open(f"Send_SMS/{name}", "wb") as remote:
        remote.write(json.dumps({"Version": 7, "Message_Template": "Hi from ACME", "Contacts": contacts}).encode())
    folder, report = service.wait_report(account, name)
    assert folder == "Processed" and report["messages_queued"] == len(numbers), report
    return UUID(report["file_id"])


def set_replies(service: Service, account: str) -> None:
    done = service.cli("account", "replies", account, "--help-text", HELP_TEXT, "--stop-text", STOP_TEXT)
    assert done.returncode == 0, done.stderr


# ---- through the simulator's replies ---------------------------------------------------------------


@contextmanager
def simulator_service(tmp_path: Path, reply_text: str) -> Iterator[Service]:
    data = tmp_path / "data"
    data.mkdir()
    (data / "gateways.toml").write_text(
        f'[gateways.simulator]\nreply_per_mille = 1000\nreply_text = "{reply_text}"\ndelay = 0.2\nfailed_per_mille = 0\n'
        "expired_per_mille = 0\n"
    )
    with running_service(data) as service:
        service.add_account("acme", credits=10)
        set_replies(service, "acme")
        yield service


def simulated_reply_id(service: Service, file_id: UUID) -> str:
    """The simulator's id for the reply to the file's first message: R + the message's gateway id."""
    submitted = wait_for(
        "the file's message submitted",
        lambda: [e for e in events_of(service, dispatch_log_id(batch_id(file_id, 0))) if isinstance(e, DispatchLog.MessageSubmitted)],
        service,
    )
    return f"R{submitted[0].gateway_id}"


def test_a_simulated_help_reply_gets_one_help_answer_charged_and_delivered(tmp_path: Path) -> None:
    with simulator_service(tmp_path, "HELP") as service:
        file_id = upload(service, "acme", "help.json", ["27831234567"])
        reply = auto_reply_id("simulator", simulated_reply_id(service, file_id))
        # A receipt may be recorded before the dispatcher's flush writes its MessageSubmitted.
        found = wait_for(
            "the answer submitted and delivered",
            lambda: (a := answer_events(service, reply))["reported"] and a["submitted"] and a,
            service,
        )
        [queued] = found["auto_reply"]
        assert isinstance(queued, AutoReply.AutoReplyQueued)
        assert (queued.kind, queued.msisdn, queued.text, queued.parts, queued.gateway) == (
            "help", "27831234567", HELP_TEXT, 1, "simulator",
        )
        assert queued.in_reply_to == str(message_id(file_id, 0))
        assert [e.text for e in found["queued"]] == [HELP_TEXT]
        [submitted] = found["submitted"]
        assert submitted.gateway == "simulator" and submitted.msisdn == "27831234567"
        assert found["reported"][0].status == "delivered"
        assert found["reported"][0].message_id == queued.message_id == str(message_id(reply, 0))
        # 1 credit for the file's message, 1 for the answer; no simulated reply to the answer.
        assert balance(service, "acme") == 8
        reserved = [e for e in events_of(service, account_id("acme")) if isinstance(e, Account.CreditsReserved)]
        assert [(e.file_id, e.amount) for e in reserved] == [(str(file_id), 1), (str(reply), 1)]
        time.sleep(1.0)  # a reply to the answer would come within 0.4 s
        accepted = (service.settings.simulator_dir / "accepted.log").read_text().splitlines()
        assert len(accepted) == 2 and sum(queued.message_id in line for line in accepted) == 1
        # What was sent to the number includes the answer, in the history (sftpsms history).
        shown = service.cli("history", "--msisdn", "27831234567", "--format", "json")
        assert shown.returncode == 0, shown.stderr
        sent = {m["message_id"]: m for m in map(json.loads, shown.stdout.splitlines())}
        assert set(sent) == {str(message_id(file_id, 0)), queued.message_id}
        answer = sent[queued.message_id]
        assert (answer["text"], answer["file"], answer["status"]) == (HELP_TEXT, "answer:help", "delivered")


def test_a_simulated_stop_reply_opts_out_and_gets_one_confirmation(tmp_path: Path) -> None:
    with simulator_service(tmp_path, "STOP") as service:
        file_id = upload(service, "acme", "stop.json", ["27831234567"])
        reply = auto_reply_id("simulator", simulated_reply_id(service, file_id))
        found = wait_for("the confirmation submitted", lambda: (a := answer_events(service, reply))["submitted"] and a, service)
        [queued] = found["auto_reply"]
        assert (queued.kind, queued.text) == ("stop", STOP_TEXT)
        opted = [n for e in events_of(service, account_id("acme")) if isinstance(e, Account.OptOutsAdded) for n in e.msisdns]
        assert opted == ["27831234567"]
        replies = [e for e in events_of(service, delivery_log_id(batch_id(file_id, 0))) if isinstance(e, DeliveryLog.ReplyReceived)]
        assert [(e.text, e.opt_out) for e in replies] == [("STOP", True)]
        assert balance(service, "acme") == 8


# ---- through the inbound HTTP endpoint --------------------------------------------------------------


@contextmanager
def http_service(tmp_path: Path, provider: Provider, *settings: str) -> Iterator[Service]:
    """The service with a gateway `bulkhttp` to `provider`, numbers starting 2783 routed to it."""
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    lines = ["[gateways.bulkhttp]", 'type = "http"', f'url = "{provider.url}"', 'inbound_token = "in-secret"',
             "backoff = 0.05", *settings]
    (data / "gateways.toml").write_text("\n".join(lines) + "\n")
    with running_service(data, "--http-port", "0") as service:
        assert service.http_port
        routed = service.cli("route", "add", "2783", "--gateway", "bulkhttp")
        assert routed.returncode == 0, routed.stderr
        yield service


def post_reply(service: Service, reply_id: str, number: str, text: str, in_reply_to: str) -> None:
    body = {"id": reply_id, "from": f"+{number}", "to": "ACME", "text": text, "in_reply_to": in_reply_to}
    answer = httpx.post(
        f"http://127.0.0.1:{service.http_port}/gateways/bulkhttp/replies", json=body,
        headers={"authorization": "Bearer in-secret"},
    )
    assert answer.status_code == 200, answer.text


def provider_ids(provider: Provider, file_id: UUID, count: int) -> list[str]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ids = [provider.ids.get(str(message_id(file_id, i)), [None])[0] for i in range(count)]
        if all(ids):
            return [str(i) for i in ids]
        time.sleep(0.05)
    raise AssertionError(f"the provider got {provider.sent} messages")


def answers_sent(provider: Provider, to: str) -> list[dict[str, Any]]:
    return [r.body for r in provider.requests if r.body["to"] == f"+{to}" and r.body["text"] != "Hi from ACME"]


def test_http_help_and_stop_are_answered_once_through_the_http_gateway(tmp_path: Path) -> None:
    with running_provider() as provider, http_service(tmp_path, provider) as service:
        service.add_account("acme", credits=100)
        set_replies(service, "acme")
        file_id = upload(service, "acme", "http.json", NUMBERS)
        ids = provider_ids(provider, file_id, 3)

        post_reply(service, "R1", NUMBERS[0], "help", ids[0])
        wait_for("the HELP answer", lambda: answers_sent(provider, NUMBERS[0]), service)
        post_reply(service, "R1", NUMBERS[0], "help", ids[0])  # the provider delivers it again

        post_reply(service, "R2", NUMBERS[1], "STOP", ids[1])
        wait_for("the STOP confirmation", lambda: answers_sent(provider, NUMBERS[1]), service)
        post_reply(service, "R3", NUMBERS[1], "HELP", ids[1])  # after STOP: nothing more
        post_reply(service, "R4", NUMBERS[2], "thanks!", ids[2])  # no keyword: no answer

        # Every reply recorded (R1 once) before we look for answers that should not be there.
        def replies() -> list[Any]:
            found = [
                e for e in events_of(service, delivery_log_id(batch_id(file_id, 0))) if isinstance(e, DeliveryLog.ReplyReceived)
            ]
            return found if len(found) == 4 else []

        assert sorted(e.reply_id for e in wait_for("four replies", replies, service)) == ["R1", "R2", "R3", "R4"]
        time.sleep(1.0)  # a second answer would be queued in the replies' transaction and sent within this
        [help_answer] = answers_sent(provider, NUMBERS[0])
        assert (help_answer["text"], help_answer["from"], help_answer["parts"]) == (HELP_TEXT, "ACME", 1)
        assert help_answer["message_id"] == str(message_id(auto_reply_id("bulkhttp", "R1"), 0))
        assert help_answer["customer_id"] == "C0" and help_answer["account"] == "acme"
        [confirmation] = answers_sent(provider, NUMBERS[1])
        assert confirmation["text"] == STOP_TEXT
        assert answers_sent(provider, NUMBERS[2]) == []
        for reply_id in ("R3", "R4"):
            assert events_of(service, auto_reply_id("bulkhttp", reply_id)) == []
        assert [type(e).__name__ for e in events_of(service, auto_reply_id("bulkhttp", "R1"))] == ["AutoReplyQueued"]
        assert balance(service, "acme") == 100 - 3 - 2


def test_an_answer_queued_before_a_restart_is_sent_once_after_it(tmp_path: Path) -> None:
    with running_provider() as provider:
        with http_service(tmp_path, provider, "retries = 0", "concurrency = 1") as service:
            service.add_account("acme", credits=100)
            set_replies(service, "acme")
            file_id = upload(service, "acme", "restart.json", NUMBERS[:1])
            ids = provider_ids(provider, file_id, 1)
            provider.script = [503] * 1000  # the gateway is down: the answer waits in its batch
            post_reply(service, "R1", NUMBERS[0], "HELP", ids[0])
            reply = auto_reply_id("bulkhttp", "R1")
            wait_for("the answer queued", lambda: answer_events(service, reply)["queued"], service)
            wait_for("a try at sending it", lambda: len(provider.requests) > 1, service)
        provider.script = []
        with http_service(tmp_path, provider, "retries = 0", "concurrency = 1") as service:
            post_reply(service, "R1", NUMBERS[0], "HELP", ids[0])  # and the provider sends the reply again
            wait_for("the answer sent", lambda: answer_events(service, reply)["submitted"], service)
            time.sleep(1.0)
            found = answer_events(service, reply)
            assert len(found["auto_reply"]) == 1 and len(found["queued"]) == 1 and len(found["submitted"]) == 1
            accepted = [r for r in provider.requests if r.body["message_id"] == str(message_id(reply, 0)) and r.body["text"] == HELP_TEXT]
            assert len({r.body["message_id"] for r in accepted}) == 1
            assert provider.ids.get(str(message_id(reply, 0))) is not None
            assert balance(service, "acme") == 100 - 1 - 1


def test_without_texts_a_help_reply_gets_no_answer(tmp_path: Path) -> None:
    with running_provider() as provider, http_service(tmp_path, provider) as service:
        service.add_account("quiet", credits=100)
        file_id = upload(service, "quiet", "quiet.json", NUMBERS[:1])
        ids = provider_ids(provider, file_id, 1)
        post_reply(service, "R1", NUMBERS[0], "HELP", ids[0])
        post_reply(service, "R2", NUMBERS[0], "STOP", ids[0])

        def replies() -> list[Any]:
            found = [e for e in events_of(service, delivery_log_id(batch_id(file_id, 0))) if isinstance(e, DeliveryLog.ReplyReceived)]
            return found if len(found) == 2 else []

        wait_for("both replies", replies, service)
        time.sleep(1.0)
        assert answers_sent(provider, NUMBERS[0]) == []
        assert events_of(service, auto_reply_id("bulkhttp", "R1")) == []
        assert balance(service, "quiet") == 99


def test_without_credits_the_answer_is_recorded_as_not_sent(tmp_path: Path) -> None:
    with running_provider() as provider, http_service(tmp_path, provider) as service:
        service.add_account("broke", credits=1)
        set_replies(service, "broke")
        file_id = upload(service, "broke", "broke.json", NUMBERS[:1])  # takes the last credit
        ids = provider_ids(provider, file_id, 1)
        post_reply(service, "R1", NUMBERS[0], "HELP", ids[0])
        reply = auto_reply_id("bulkhttp", "R1")
        [not_sent] = wait_for("the answer recorded", lambda: events_of(service, reply), service)
        assert isinstance(not_sent, AutoReply.AutoReplyNotSent)
        assert not_sent.reason == "the answer needs 1 credits, the balance is 0"
        time.sleep(1.0)
        assert answers_sent(provider, NUMBERS[0]) == []
        assert events_of(service, batch_id(reply, 0)) == []
        assert balance(service, "broke") == 0


# ---- through a real SMSC (SMPP) ---------------------------------------------------------------------


@contextmanager
def commanded_smsc() -> Iterator[tuple[int, list[dict[str, Any]], Callable[..., None]]]:
    """The test SMSC (node-smpp) for the service harness, steered while it runs: its port, the
    events it reports (a thread reads them) and a function that sends it a command."""
    install_smsc()
    process = subprocess.Popen(
        ["node", str(SMSC_DIR / "smsc.js"), "0"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert process.stdin is not None and process.stdout is not None
    stdin, stdout = process.stdin, process.stdout
    events: list[dict[str, Any]] = []

    def read() -> None:
        for line in stdout:
            events.append(json.loads(line))

    def command(cmd: str, **fields: Any) -> None:
        stdin.write(json.dumps({"cmd": cmd, **fields}) + "\n")
        stdin.flush()

    try:
        listening = json.loads(stdout.readline())
        assert listening["event"] == "listening", listening
        threading.Thread(target=read, daemon=True).start()
        command("config", receipts="each")
        yield int(listening["port"]), events, command
    finally:
        process.kill()
        process.wait()


def test_an_smpp_help_reply_is_answered_once_through_the_smsc(tmp_path: Path) -> None:
    number = "27841230001"
    with commanded_smsc() as (port, events, command):
        data = tmp_path / "data"
        data.mkdir()
        (data / "gateways.toml").write_text(
            f'[gateways.smsc]\ntype = "smpp"\nhost = "127.0.0.1"\nport = {port}\n'
            'system_id = "acme"\npassword = "pw"\nreconnect_backoff = 0.1\n'
        )
        with running_service(data) as service:
            service.add_account("acme", credits=10)
            set_replies(service, "acme")
            assert service.cli("route", "add", "2784", "--gateway", "smsc").returncode == 0
            file_id = upload(service, "acme", "smpp.json", [number])

            def submits() -> list[dict[str, Any]]:
                return [e for e in list(events) if e["event"] == "submit" and e["dest"] == number]

            wait_for("the file's message at the SMSC", submits, service)
            wait_for(
                "its receipt recorded",
                lambda: [e for e in events_of(service, delivery_log_id(batch_id(file_id, 0))) if isinstance(e, DeliveryLog.DeliveryReported)],
                service,
            )
            command("mo", **{"from": number, "to": "ACME", "text": "HELP"})
            answer = wait_for("the answer at the SMSC", lambda: [e for e in submits() if e["text"] == HELP_TEXT], service)
            assert answer[0]["source"] == "ACME" and answer[0]["data_coding"] == 0
            command("mo", **{"from": number, "to": "ACME", "text": "HELP"})  # the SMSC delivers it again
            wait_for("the second delivery answered", lambda: len([e for e in list(events) if e["event"] == "deliver_sm_resp"]) >= 4, service)
            time.sleep(1.0)
            assert len(submits()) == 2  # the file's message and one answer
            [reply] = [e for e in events_of(service, delivery_log_id(batch_id(file_id, 0))) if isinstance(e, DeliveryLog.ReplyReceived)]
            [queued] = events_of(service, auto_reply_id("smsc", reply.reply_id))
            assert (queued.kind, queued.gateway, queued.sender_id) == ("help", "smsc", "ACME")
            wait_for("the answer's receipt", lambda: answer_events(service, auto_reply_id("smsc", reply.reply_id))["reported"], service)
            assert balance(service, "acme") == 8


# ---- the recorder, when its transaction fails ------------------------------------------------------


def test_a_stop_whose_first_save_conflicts_is_still_confirmed_on_the_retry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The receipts actor tries a failed group once more from fresh aggregates: the number the
    first try opted out must not count as opted out before (that would drop the confirmation)."""
    from datetime import UTC, datetime

    from eventsourcing.persistence import IntegrityError

    from actors.gateway import GatewayReply, OutboundMessage
    from actors.projector import Projector
    from actors.receipts import ReportRecorder
    from actors.submissions import RecentSubmissions, SubmissionRef
    from eventstore.store import open_store

    at = datetime(2026, 11, 25, 12, tzinfo=UTC)
    store = open_store(tmp_path)
    store.create_account(username="acme", password_hash="x", email=None, country="ZA", created_at=at)
    store.add_credits("acme", 10)
    store.set_auto_replies("acme", HELP_TEXT, STOP_TEXT, ["HELP"])
    file = UUID(int=7)
    batch = ContactBatch.open(file=file, account="acme", number=0, sender_id="ACME", not_before=None, expires_at=None, timestamp=at)
    batch.queue(0, NUMBERS[0], "C0", "Hi", 1)
    batch.seal()
    store.save(batch)
    message = OutboundMessage(message_id=message_id(file, 0), batch_id=batch.id, file_id=file, index=0, account="acme",
                              msisdn=NUMBERS[0], sender_id="ACME", text="Hi", parts=1, customer_id="C0")
    recent = RecentSubmissions()
    recent.add(SubmissionRef.of(message, "smsc", "42"), ("42",))
    recorder = ReportRecorder(recent, tmp_path / "readmodels.db", OPTOUT_WORDS)
    Projector(store, tmp_path / "readmodels.db").catch_up_sync()
    stop = GatewayReply(gateway="smsc", reply_id="r1", msisdn=NUMBERS[0], to="ACME", text="STOP", at=at, in_reply_to="42")
    real_save = store.save
    tries: list[int] = []

    def save_after_a_concurrent_change(*aggregates: Any, **kwargs: Any) -> Any:
        tries.append(1)
        if len(tries) == 1:  # the admin CLI adds credits between our read and our write
            other = open_store(tmp_path)
            try:
                other.add_credits("acme", 1)
            finally:
                other.close()
        return real_save(*aggregates, **kwargs)

    monkeypatch.setattr(store, "save", save_after_a_concurrent_change)
    try:
        matched = [(stop, recorder.match(stop))]
        with pytest.raises(IntegrityError):
            recorder.record(store, matched)
        assert recorder.record(store, matched) == []
        [queued] = store.events.get(auto_reply_id("smsc", "r1"))
        assert isinstance(queued, AutoReply.AutoReplyQueued) and queued.kind == "stop"
        assert store.account("acme").balance == 10 + 1 - 1
    finally:
        recorder.close()
        store.close()
