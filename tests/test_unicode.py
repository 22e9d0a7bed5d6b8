"""Unicode by choice: an account with UCS-2 on sends text outside GSM 03.38 as UCS-2 (70 code units
in one SMS, 67 per part concatenated, a surrogate pair never split), counted exactly by pass 1 and
charged by it; off (the default), such text is a contact error as before. The wire: data_coding 8
seen by a real SMSC (node-smpp), `"encoding": "ucs2"` seen by a real HTTP provider; the report
and the delivery CSV say which messages went as UCS-2."""

from __future__ import annotations

import csv
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.gateway import GatewayReport, OutboundMessage
from actors.http_gateway import HttpGateway
from actors.pass_one import PassOneWorkers, pass_one_checker
from actors.smpp_gateway import SmppGateway
from eventstore.domain import Account, account_id
from eventstore.projections import ReadModels
from sftpsms.errors import ErrorCode
from sftpsms.fileformat import RawContact
from sftpsms.gateways import HttpGatewayConfig, SmppGatewayConfig
from sftpsms.gsm import (
    GSM,
    UCS2,
    NotGsmText,
    count_ucs2_parts,
    encode_parts,
    message_parts,
    split_ucs2,
    ucs2_units,
)
from sftpsms.intake import AccountPolicy, ContactChecker, PlanFailed, plan_file
from sftpsms.numbers import NetworkDirectory
from tests.provider import running_provider
from tests.service import Service, running_service
from tests.smsc_server import Smsc, running_smsc

NOW = datetime(2026, 11, 25, 9, tzinfo=UTC)
CYRILLIC = "ж"  # one UTF-16 code unit, not GSM
EMOJI = "😀"  # two code units (a surrogate pair)
POLICY = AccountPolicy(username="acme", country="ZA", allow_custom_sender=False, balance=10**9, unicode=True)


def checker(*, unicode: bool, max_parts: int = 10) -> ContactChecker:
    return ContactChecker(template=None, country="ZA", networks=NetworkDirectory(), max_parts=max_parts, unicode=unicode)


def check(text: str, *, unicode: bool = True, max_parts: int = 10) -> Any:
    return checker(unicode=unicode, max_parts=max_parts).check(RawContact(0, "27831234567", None, {}, text))


# ---- counting parts ------------------------------------------------------------------------------


@pytest.mark.parametrize(("length", "parts"), [(1, 1), (70, 1), (71, 2), (134, 2), (135, 3), (670, 10), (671, 11)])
def test_ucs2_parts_are_70_alone_and_67_concatenated(length: int, parts: int) -> None:
    text = CYRILLIC * length
    assert count_ucs2_parts(text) == parts == len(split_ucs2(text))
    assert message_parts(text, unicode=True) == (UCS2, parts)
    coding, payloads = encode_parts(text, reference=1)  # what the SMPP gateway sends
    assert (coding, len(payloads)) == (8, parts)


@pytest.mark.parametrize(("text", "parts"), [(EMOJI * 35, 1), (EMOJI * 36, 2), (CYRILLIC * 69 + EMOJI, 2)])
def test_an_emoji_counts_two_code_units(text: str, parts: int) -> None:
    assert count_ucs2_parts(text) == parts


def test_a_surrogate_pair_is_never_split_across_parts() -> None:
    text = CYRILLIC * 66 + EMOJI + CYRILLIC * 10  # the emoji would straddle the end of part 1
    parts = split_ucs2(text)
    assert [ucs2_units(part) for part in parts] == [66, 12]
    assert parts[1].startswith(EMOJI) and "".join(parts) == text
    assert count_ucs2_parts(text) == 2
    # 134 code units in all, which would fit 2 parts only if the pair were cut: it takes 3.
    tight = CYRILLIC * 66 + EMOJI + CYRILLIC * 66
    assert ucs2_units(tight) == 134 and count_ucs2_parts(tight) == 3 == len(split_ucs2(tight))


@settings(max_examples=400, deadline=None)
@given(st.text(st.sampled_from([CYRILLIC, EMOJI, "a", "é", "中", "🇿", "\n"]), max_size=400))
def test_the_part_count_is_the_split_that_is_sent(text: str) -> None:
    parts = split_ucs2(text)
    assert count_ucs2_parts(text) == len(parts)
    assert "".join(parts) == text
    limit = 70 if len(parts) == 1 else 67
    for part in parts:
        assert ucs2_units(part) <= limit
        part.encode("utf-16-be")  # a lone surrogate would not encode


# ---- pass 1 ---------------------------------------------------------------------------------------


def test_gsm_text_stays_gsm_when_unicode_is_on() -> None:
    text = "Price 5€ [promo] ñ " * 9  # 171 characters, 180 septets: two GSM parts (one UCS-2 part would be 3)
    assert message_parts(text, unicode=True) == (GSM, 2)
    assert check(text).parts == 2


def test_with_unicode_off_non_gsm_text_is_a_parse_error_as_before() -> None:
    outcome = check("Привет 😀", unicode=False)
    assert outcome.code == ErrorCode.PARSE_ERROR
    assert outcome.detail == "character 'П' (U+041F) is not in the GSM 03.38 alphabet"
    with pytest.raises(NotGsmText):
        message_parts("Привет", unicode=False)


def test_with_unicode_on_the_parts_are_counted_as_ucs2() -> None:
    assert (check(CYRILLIC * 71).code, check(CYRILLIC * 71).parts) == (None, 2)
    assert check(EMOJI * 36).parts == 2


def test_the_parts_limit_counts_ucs2_parts() -> None:
    assert check(CYRILLIC * 670).parts == 10
    outcome = check(CYRILLIC * 671)
    assert (outcome.code, outcome.detail) == (ErrorCode.PARSE_ERROR, "message needs 11 parts, more than the limit of 10")


def write_file(tmp_path: Path, contacts: list[dict[str, Any]]) -> Path:
    path = tmp_path / "up.json"
    path.write_text(json.dumps({"Version": 7, "Message_Template": "Hi @@value1@@", "Contacts": contacts}))
    return path


MIXED = [
    {"msisdn": "27831000001", "values": {"value1": "Thandi"}},  # GSM: 1 part
    {"msisdn": "27831000002", "message": CYRILLIC * 71},  # UCS-2: 2 parts
    {"msisdn": "27831000003", "message": EMOJI * 36},  # UCS-2: 2 parts
    {"msisdn": "27831000004", "message": "x" * 161},  # GSM: 2 parts
]


def test_pass_one_charges_ucs2_parts_and_counts_ucs2_messages(tmp_path: Path) -> None:
    plan = plan_file(
        write_file(tmp_path, MIXED), policy=POLICY, networks=NetworkDirectory(), opted_out=lambda numbers: set(),
        now=NOW, spool=tmp_path / "spool.jsonl",
    )
    assert (plan.messages, plan.parts, plan.credits, plan.ucs2_messages, plan.ucs2_parts) == (4, 7, 7, 2, 4)


def test_the_credit_check_uses_the_ucs2_parts(tmp_path: Path) -> None:
    with pytest.raises(PlanFailed) as failed:
        plan_file(
            write_file(tmp_path, MIXED), policy=replace(POLICY, balance=6), networks=NetworkDirectory(),
            opted_out=lambda numbers: set(), now=NOW, spool=tmp_path / "spool.jsonl",
        )
    assert failed.value.code == ErrorCode.INSUFFICIENT_CREDITS
    assert failed.value.detail == "the file needs 7 credits, the balance is 6"


def test_a_split_pass_one_counts_ucs2_as_one_pass_does(tmp_path: Path) -> None:
    contacts = [
        {"msisdn": f"278310{i:05d}", "message": (EMOJI if i % 3 else CYRILLIC) * (i % 90 + 1)} if i % 2 else
        {"msisdn": f"278310{i:05d}", "values": {"value1": f"N{i}"}}
        for i in range(3000)
    ]
    path = write_file(tmp_path, contacts)
    models_path = tmp_path / "readmodels.db"
    ReadModels(models_path).close()

    def run(workers: PassOneWorkers | None, spool: Path) -> tuple[Any, ...]:
        plan = plan_file(
            path, policy=POLICY, networks=NetworkDirectory(), opted_out=lambda numbers: set(), now=NOW, spool=spool,
            check_contacts=pass_one_checker(workers, parts=tmp_path / "parts", optouts=(models_path, "acme"), min_bytes=0),
        )
        return (plan.messages, plan.rejected, plan.parts, plan.ucs2_messages, plan.ucs2_parts), spool.read_bytes()

    single = run(None, tmp_path / "one.jsonl")
    assert single[0][1] == 0 and single[0][3] == 1500  # every odd contact is UCS-2, none rejected
    pool = PassOneWorkers(1)
    pool.start()
    try:
        assert run(pool, tmp_path / "split.jsonl") == single
    finally:
        pool.close()


# ---- the wire -------------------------------------------------------------------------------------


def outbound(text: str) -> OutboundMessage:
    return OutboundMessage(
        message_id=uuid.uuid5(uuid.NAMESPACE_OID, f"unicode-{text}"), batch_id=uuid.UUID(int=1),
        file_id=uuid.UUID(int=2), index=0, account="acme", msisdn="447700900123", sender_id="Acme", text=text,
        parts=message_parts(text, unicode=True)[1],
    )


@pytest.fixture
async def smsc() -> AsyncIterator[Smsc]:
    async with running_smsc() as running:
        yield running


async def test_smpp_sends_ucs2_with_data_coding_8_in_the_parts_counted(smsc: Smsc, nursery: trio.Nursery, tmp_path: Path) -> None:
    send, _receive = trio.open_memory_channel[GatewayReport](10)
    config = SmppGatewayConfig(name="smsc", host="127.0.0.1", port=smsc.port, system_id="acme", password="pw",
                               reconnect_backoff=0.05, response_timeout=5.0)
    gateway = SmppGateway(config, send, journal_dir=tmp_path)
    await nursery.start(gateway.run)
    text = CYRILLIC * 66 + EMOJI + " done"  # the emoji moves whole into part 2
    message = outbound(text)
    assert message.parts == 2
    ids = await gateway.submit(message)
    submits = await smsc.wait_for("submit", 2)
    assert len(ids) == message.parts == len(submits)
    assert {submit["data_coding"] for submit in submits} == {8}
    assert [submit["text"] for submit in submits] == [CYRILLIC * 66, EMOJI + " done"]
    await gateway.submit(outbound("Hello from Acme"))  # GSM text stays data_coding 0
    assert (await smsc.wait_for("submit", 3))[2]["data_coding"] == 0


async def test_http_names_the_encoding_of_each_message() -> None:
    with running_provider() as provider:
        gateway = HttpGateway(HttpGatewayConfig(name="bulkhttp", url=provider.url, backoff=0.01, timeout=2.0),
                              trio.open_memory_channel[GatewayReport](10)[0])
        async with trio.open_nursery() as nursery:
            await nursery.start(gateway.run)
            await gateway.submit(outbound(EMOJI * 36))
            await gateway.submit(outbound("Hello from Acme"))
            nursery.cancel_scope.cancel()
    ucs2, gsm = (request.body for request in provider.requests)
    assert (ucs2["encoding"], ucs2["parts"], ucs2["text"]) == ("ucs2", 2, EMOJI * 36)
    assert (gsm["encoding"], gsm["parts"]) == ("gsm", 1)


# ---- through the service --------------------------------------------------------------------------


def upload(service: Service, account: str, name: str, contacts: list[dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    with service.paramiko(account) as sftp, sftp.open(f"Send_SMS/{name}", "wb") as remote:
        remote.write(json.dumps({"Version": 7, "Message_Template": "Hi @@value1@@", "Contacts": contacts}).encode())
    return service.wait_report(account, name)


def test_the_service_sends_ucs2_for_an_account_that_chose_it_and_reports_it(tmp_path: Path) -> None:
    with running_service(tmp_path / "data") as service:
        service.add_account("acme", credits=100)
        service.add_account("plain", credits=100)
        turned = service.cli("account", "unicode", "acme", "on", "--json")
        assert turned.returncode == 0 and json.loads(turned.stdout) == {"username": "acme", "unicode": True, "changed": True}
        assert json.loads(service.cli("account", "unicode", "acme", "on", "--json").stdout)["changed"] is False
        assert json.loads(service.cli("account", "show", "acme", "--json").stdout)["unicode"] is True
        assert json.loads(service.cli("account", "show", "plain", "--json").stdout)["unicode"] is False

        folder, report = upload(service, "acme", "mixed.json", MIXED)
        assert folder == "Processed", report
        assert (report["messages_queued"], report["parts"], report["credits_used"]) == (4, 7, 7)
        assert (report["ucs2_messages"], report["ucs2_parts"]) == (2, 4)
        assert list(report).index("ucs2_messages") == list(report).index("credits_used") + 1

        folder, plain = upload(service, "plain", "mixed.json", MIXED)
        assert folder == "Processed" and plain["messages_queued"] == 2 and plain["credits_used"] == 3
        assert (plain["ucs2_messages"], plain["ucs2_parts"]) == (0, 0)
        assert [(e["index"], e["code"]) for e in plain["contact_errors"]] == [(1, "File.ParseError"), (2, "File.ParseError")]

        path = service.folder("acme", "Processed") / "mixed.json.delivery.csv"
        deadline = time.monotonic() + 30
        rows: list[dict[str, str]] = []
        while time.monotonic() < deadline:
            if path.exists():
                rows = list(csv.DictReader(path.read_text().splitlines()))
                if len(rows) == 4 and all(r["status"] in ("delivered", "failed", "expired") for r in rows):
                    break
            time.sleep(0.1)
        assert [(r["index"], r["encoding"], r["parts"]) for r in rows] == [
            ("0", "gsm", "1"), ("1", "ucs2", "2"), ("2", "ucs2", "2"), ("3", "gsm", "2"),
        ], service.log()[-2000:]
        assert all(r["submitted_at"] for r in rows)  # the simulator took them

        replayed = service.cli("replay", "--account", "acme", "--file", "mixed.json")
        assert replayed.returncode == 0, replayed.stderr  # the report rebuilt from the events is the filed one
        store = service.store()
        try:
            changes = [e.enabled for e in store.events.get(account_id("acme")) if isinstance(e, Account.UnicodeSet)]
        finally:
            store.close()
        assert changes == [True]
        assert json.loads(service.cli("account", "unicode", "acme", "off", "--json").stdout)["changed"] is True
