"""Pass 1 split across processes gives exactly what one pass in one thread gives."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from actors.pass_one import part_bounds, pass_one_checker
from eventstore.projections import ReadModels
from sftpsms.errors import FileRejected
from sftpsms.intake import AccountPolicy, PlanFailed, check_all, plan_file
from sftpsms.numbers import NetworkDirectory

NOW = datetime(2026, 11, 25, 9, tzinfo=UTC)
POLICY = AccountPolicy(username="acme", country="ZA", allow_custom_sender=False, balance=10**9)
OPTED_OUT = {"27831000042", "27831003999", "27831004500"}
CONTACTS = 5000


def contact(i: int) -> dict[str, Any]:
    """A mix: valid, opted out, not a number, no network, too long, not GSM, own message."""
    row: dict[str, Any] = {"msisdn": f"083100{i:04d}", "customerId": f"C{i}", "values": {"value1": f"N{i}"}}
    if i % 97 == 5:
        row["msisdn"] = "not a number"
    elif i % 89 == 7:
        row["msisdn"] = "0111"
    elif i % 83 == 11:
        row["values"] = {"value1": "x" * 2000}
    elif i % 79 == 13:
        row["message"] = "emoji 😀"
    elif i % 7 == 0:
        row["message"] = f"own message {i} with € and {{braces}} [and] \"quotes\""
    return row


def write(tmp_path: Path, contacts: list[dict[str, Any]], **header: Any) -> Path:
    body = {"Version": 7, "Message_Template": "Hi @@value1@@", **header, "Contacts": contacts}
    path = tmp_path / "up.json"
    path.write_text(json.dumps(body))
    return path


def read_models(tmp_path: Path) -> Path:
    """A read-model database in which OPTED_OUT (and another account's number) opted out."""
    path = tmp_path / "readmodels.db"
    if not path.exists():
        models = ReadModels(path)
        rows = [{"account": "acme", "msisdn": m} for m in OPTED_OUT] + [{"account": "other", "msisdn": "27831000050"}]
        models.db.table("optouts").insert_all(rows)
        models.close()
    return path


def outcome_of(path: Path, processes: int, tmp_path: Path) -> tuple[Any, ...]:
    """Everything pass 1 decides: the plan's counts or the failure, and the spool's bytes."""
    spool = tmp_path / f"spool-{processes}.jsonl"
    models = ReadModels(read_models(tmp_path))
    try:
        plan = plan_file(
            path,
            policy=POLICY,
            networks=NetworkDirectory(),
            opted_out=lambda numbers: models.opted_out("acme", numbers),
            now=NOW,
            spool=spool,
            check_contacts=pass_one_checker(
                processes, parts=tmp_path / "parts", optouts=(read_models(tmp_path), "acme"), min_bytes=0
            ),
        )
    except PlanFailed as failure:
        result: tuple[Any, ...] = ("failed", failure.code, failure.detail, failure.plan.contacts, failure.plan.first_errors)
    except FileRejected as rejection:
        result = ("rejected", rejection.code, rejection.detail)
    else:
        result = ("planned", plan.contacts, plan.messages, plan.rejected, plan.optouts, plan.parts, plan.first_errors)
    finally:
        models.close()
    assert not list(tmp_path.glob("parts.part*")), "part files are removed"
    return result, spool.read_bytes()


@pytest.mark.parametrize("processes", [2, 3])
def test_a_split_pass_plans_and_spools_exactly_like_one_pass(tmp_path: Path, processes: int) -> None:
    path = write(tmp_path, [contact(i) for i in range(CONTACTS)])
    single = outcome_of(path, 1, tmp_path)
    assert single[0][0] == "planned" and single[0][4] == 3  # three opt-outs, found in several parts
    assert b"27831000050" in single[1]  # opted out of another account only
    assert outcome_of(path, processes, tmp_path) == single


def test_max_errors_crossed_in_a_worker_part_fails_at_the_same_contact(tmp_path: Path) -> None:
    path = write(tmp_path, [contact(i) for i in range(CONTACTS)], Max_Errors=150)
    single = outcome_of(path, 1, tmp_path)
    assert single[0][0] == "failed" and single[0][3] > 2000  # beyond the first part
    assert outcome_of(path, 2, tmp_path) == single


def test_a_contact_without_message_or_template_in_a_worker_part_fails_the_same(tmp_path: Path) -> None:
    contacts = [{"msisdn": f"083100{i:04d}", "message": "hi"} for i in range(CONTACTS)]
    del contacts[4321]["message"]
    path = write(tmp_path, contacts, Message_Template="")
    single = outcome_of(path, 1, tmp_path)
    assert single[0][:2] == ("failed", "RequiredParameter.Missing") and "4321" in single[0][2]
    assert outcome_of(path, 2, tmp_path) == single


@pytest.mark.parametrize("cut_at", [0.2, 0.9])
def test_broken_json_fails_the_same_in_any_part(tmp_path: Path, cut_at: float) -> None:
    path = write(tmp_path, [contact(i) for i in range(CONTACTS)])
    data = path.read_bytes()
    cut = int(len(data) * cut_at)
    path.write_bytes(data[:cut] + b"\x01" + data[cut:])  # a control character: invalid anywhere
    single = outcome_of(path, 1, tmp_path)
    assert single[0][:2] == ("failed", "File.Corrupt")
    assert outcome_of(path, 2, tmp_path) == single


def test_without_processes_the_pass_runs_in_this_thread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, [contact(i) for i in range(CONTACTS)])
    single = outcome_of(path, 1, tmp_path)

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise OSError("no processes here")

    monkeypatch.setattr(subprocess, "Popen", refuse)
    assert outcome_of(path, 2, tmp_path) == single


def test_small_files_and_one_process_are_not_split(tmp_path: Path) -> None:
    optouts = (read_models(tmp_path), "acme")
    assert pass_one_checker(1, parts=tmp_path / "p", optouts=optouts) is check_all
    path = write(tmp_path, [contact(i) for i in range(10)])
    checker = pass_one_checker(2, parts=tmp_path / "p", optouts=optouts, min_bytes=path.stat().st_size + 1)
    assert checker(path, None, None).__name__ == "check_all"  # type: ignore[arg-type]


def test_parts_start_on_opt_out_batch_boundaries() -> None:
    assert part_bounds(100_000, 2) == [49_000]
    assert part_bounds(100_000, 3) == [32_000, 66_000]
    assert part_bounds(0, 2) == [1000]
