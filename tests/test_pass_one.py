"""Pass 1 split across processes gives exactly what one pass in one thread gives, with warm
workers that serve file after file, survive their own death and leave no process behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Generator, Iterator
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from actors.pass_one import SPLIT_MIN_BYTES, PassOneWorkers, part_bounds, pass_one_checker
from eventstore.projections import ReadModels
from sftpsms.errors import FileRejected
from sftpsms.fileformat import Header, RawContact
from sftpsms.intake import (
    AccountPolicy,
    CheckContacts,
    ContactChecker,
    Outcome,
    PlanFailed,
    Tally,
    check_all,
    plan_file,
)
from sftpsms.numbers import NetworkDirectory
from tests.service import running_service

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


@pytest.fixture
def workers() -> Iterator[PassOneWorkers]:
    """One warm worker (two processes in all), stopped after the test."""
    pool = PassOneWorkers(1)
    pool.start()
    yield pool
    pool.close()


def is_running(pid: int) -> bool:
    """Whether the process exists and has not exited (a zombie nobody reaped yet has)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def outcome_of(
    path: Path, workers: PassOneWorkers | None, tmp_path: Path, *, spy: Any = None
) -> tuple[Any, ...]:
    """Everything pass 1 decides: the plan's counts or the failure, and the spool's bytes. `spy`
    wraps the way contacts are checked (to act while the pass runs)."""
    spool = tmp_path / "spool.jsonl"
    models = ReadModels(read_models(tmp_path))
    check: CheckContacts = pass_one_checker(
        workers, parts=tmp_path / "parts", optouts=(read_models(tmp_path), "acme"), min_bytes=0
    )
    try:
        plan = plan_file(
            path,
            policy=POLICY,
            networks=NetworkDirectory(),
            opted_out=lambda numbers: models.opted_out("acme", numbers),
            now=NOW,
            spool=spool,
            check_contacts=check if spy is None else spy(check),
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


@pytest.mark.parametrize("count", [1, 2])
def test_a_split_pass_plans_and_spools_exactly_like_one_pass(tmp_path: Path, count: int) -> None:
    path = write(tmp_path, [contact(i) for i in range(CONTACTS)])
    single = outcome_of(path, None, tmp_path)
    assert single[0][0] == "planned" and single[0][4] == 3  # three opt-outs, found in several parts
    assert b"27831000050" in single[1]  # opted out of another account only
    pool = PassOneWorkers(count)
    pool.start()
    try:
        assert outcome_of(path, pool, tmp_path) == single
    finally:
        pool.close()


def test_max_errors_crossed_in_a_worker_part_fails_at_the_same_contact(
    tmp_path: Path, workers: PassOneWorkers
) -> None:
    path = write(tmp_path, [contact(i) for i in range(CONTACTS)], Max_Errors=150)
    single = outcome_of(path, None, tmp_path)
    assert single[0][0] == "failed" and single[0][3] > part_bounds(CONTACTS, 2)[0]  # beyond the first part
    assert outcome_of(path, workers, tmp_path) == single


def test_a_contact_without_message_or_template_in_a_worker_part_fails_the_same(
    tmp_path: Path, workers: PassOneWorkers
) -> None:
    contacts = [{"msisdn": f"083100{i:04d}", "message": "hi"} for i in range(CONTACTS)]
    del contacts[4321]["message"]
    path = write(tmp_path, contacts, Message_Template="")
    single = outcome_of(path, None, tmp_path)
    assert single[0][:2] == ("failed", "RequiredParameter.Missing") and "4321" in single[0][2]
    assert outcome_of(path, workers, tmp_path) == single


@pytest.mark.parametrize("cut_at", [0.2, 0.9])
def test_broken_json_fails_the_same_in_any_part(tmp_path: Path, cut_at: float, workers: PassOneWorkers) -> None:
    path = write(tmp_path, [contact(i) for i in range(CONTACTS)])
    data = path.read_bytes()
    cut = int(len(data) * cut_at)
    path.write_bytes(data[:cut] + b"\x01" + data[cut:])  # a control character: invalid anywhere
    single = outcome_of(path, None, tmp_path)
    assert single[0][:2] == ("failed", "File.Corrupt")
    assert outcome_of(path, workers, tmp_path) == single


def test_without_processes_the_pass_runs_in_this_thread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, [contact(i) for i in range(CONTACTS)])
    single = outcome_of(path, None, tmp_path)

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise OSError("no processes here")

    monkeypatch.setattr(subprocess, "Popen", refuse)
    pool = PassOneWorkers(1)
    with pytest.raises(OSError):
        pool.start()
    assert outcome_of(path, pool, tmp_path) == single
    pool.close()


def test_small_files_and_no_workers_are_not_split(tmp_path: Path, workers: PassOneWorkers) -> None:
    optouts = (read_models(tmp_path), "acme")
    assert pass_one_checker(None, parts=tmp_path / "p", optouts=optouts) is check_all
    path = write(tmp_path, [contact(i) for i in range(10)])
    checker = pass_one_checker(workers, parts=tmp_path / "p", optouts=optouts, min_bytes=path.stat().st_size + 1)
    assert checker(path, None, None).__name__ == "check_all"  # type: ignore[arg-type]


# ---- warm workers -----------------------------------------------------------------------------


def test_one_warm_worker_serves_file_after_file(tmp_path: Path, workers: PassOneWorkers) -> None:
    [pid] = workers.pids()
    for n in range(3):
        path = write(tmp_path, [contact(i + n) for i in range(CONTACTS)])
        assert outcome_of(path, workers, tmp_path) == outcome_of(path, None, tmp_path)
        assert workers.pids() == [pid]
    assert workers.started == 1


def test_a_worker_that_died_idle_is_replaced_and_the_file_still_splits(
    tmp_path: Path, workers: PassOneWorkers
) -> None:
    path = write(tmp_path, [contact(i) for i in range(CONTACTS)])
    single = outcome_of(path, None, tmp_path)
    [dead] = workers.pids()
    os.kill(dead, signal.SIGKILL)
    assert outcome_of(path, workers, tmp_path) == single
    [replacement] = workers.pids()
    assert replacement != dead and workers.started == 2
    assert outcome_of(path, workers, tmp_path) == single
    assert workers.pids() == [replacement]


def kill_worker_when_the_pass_starts(workers: PassOneWorkers, check: CheckContacts) -> CheckContacts:
    """A check that stops the worker before it can read its part, then kills it once this
    process has begun its own part: the part was handed out, and never done."""

    def spy(path: Path, header: Header, checker: ContactChecker) -> Generator[Outcome | Tally, None, None]:
        [pid] = workers.pids()
        os.kill(pid, signal.SIGSTOP)
        outcomes = check(path, header, checker)
        first = next(outcomes)
        os.kill(pid, signal.SIGKILL)
        yield first
        yield from outcomes

    return spy


def test_a_worker_that_dies_with_a_part_leaves_it_to_this_process(
    tmp_path: Path, workers: PassOneWorkers
) -> None:
    path = write(tmp_path, [contact(i) for i in range(CONTACTS)])
    single = outcome_of(path, None, tmp_path)
    [dead] = workers.pids()
    assert outcome_of(path, workers, tmp_path, spy=partial(kill_worker_when_the_pass_starts, workers)) == single
    assert not is_running(dead)
    assert len(workers.pids()) == 1 and workers.started == 2  # replaced, warm for the next file


def test_a_worker_busy_with_a_failed_file_is_not_reused(tmp_path: Path, workers: PassOneWorkers) -> None:
    contacts = [contact(i) for i in range(CONTACTS)]
    path = write(tmp_path, contacts, Max_Errors=0)  # fails in this process's part, the worker's is abandoned
    [busy] = workers.pids()
    assert outcome_of(path, workers, tmp_path)[0][:2] == ("failed", "File.ParseError")
    assert not is_running(busy) and workers.started == 2
    good = write(tmp_path, contacts)
    assert outcome_of(good, workers, tmp_path) == outcome_of(good, None, tmp_path)


def test_closing_stops_every_worker(tmp_path: Path) -> None:
    pool = PassOneWorkers(2)
    pool.start()
    pids = pool.pids()
    assert len(pids) == 2 and all(is_running(pid) for pid in pids)
    pool.close()
    assert not any(is_running(pid) for pid in pids)
    with pytest.raises(OSError):
        pool.acquire()


def test_a_worker_exits_when_its_server_is_gone(tmp_path: Path) -> None:
    """The worker of a server killed outright (no close) ends as soon as its stdin does."""
    server = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from actors.pass_one import PassOneWorkers; p = PassOneWorkers(1); p.start();"
            " print(p.pids()[0], flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None
    pid = int(server.stdout.readline())
    server.kill()
    server.wait()
    server.stdout.close()
    deadline = time.monotonic() + 10
    while is_running(pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not is_running(pid)


def test_parts_start_on_opt_out_batch_boundaries() -> None:
    assert part_bounds(100_000, 2) == [57_000]
    assert part_bounds(100_000, 3) == [39_000, 70_000]
    assert part_bounds(0, 2) == [1000]


def pass_one_children(pid: int) -> list[int]:
    """The pass-one worker processes a server has started (and not yet reaped)."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        for child in task.read_text().split():
            try:
                command = Path(f"/proc/{child}/cmdline").read_bytes()
            except FileNotFoundError:
                continue
            if b"actors.pass_one" in command and is_running(int(child)):
                found.append(int(child))
    return found


def test_the_service_starts_its_worker_once_and_stops_it_on_exit(tmp_path: Path) -> None:
    big = [contact(i) for i in range(12_000)]  # over SPLIT_MIN_BYTES: split
    assert len(json.dumps(big)) > SPLIT_MIN_BYTES
    with running_service(tmp_path / "data") as service:
        service.add_account("acme", credits=10**6)
        [worker] = pass_one_children(service.process.pid)
        with service.paramiko("acme") as sftp:
            for name in ("one.json", "two.json"):
                with sftp.open(f"Send_SMS/{name}", "wb") as remote:
                    remote.write(json.dumps({"Version": 7, "Message_Template": "Hi @@value1@@", "Contacts": big}))
                folder, report = service.wait_report("acme", name)
                assert folder == "Processed" and report["contacts"] == len(big)
        assert pass_one_children(service.process.pid) == [worker]
        assert "pass-one worker" not in service.log()  # never found dead nor restarted
    assert not is_running(worker)


def test_a_long_template_costs_no_more_per_contact_than_a_short_one(tmp_path: Path) -> None:
    # Within the string limit a 60 kB template is legal; rendered for every contact it used to cost
    # 0.4 ms each in the GSM check and the part count (minutes for a large file of tiny contacts).
    path = tmp_path / "long-template.json"
    contacts = ",".join(f'{{"msisdn": "2783{n:07d}", "values": {{"value1": "a"}}}}' for n in range(20_000))
    path.write_text('{"Version": 7, "Message_Template": "' + "x" * 60_000 + ' @@value1@@", "Contacts": [' + contacts + "]}")
    started = time.perf_counter()
    with pytest.raises(PlanFailed) as failed:
        plan_file(path, policy=POLICY, networks=NetworkDirectory(), opted_out=lambda numbers: set(), now=NOW,
                  spool=tmp_path / "spool.jsonl")
    assert time.perf_counter() - started < 2.0
    assert failed.value.plan.rejected == 20_000
    assert "needs more parts than the limit of 10" in failed.value.plan.first_errors[0]["detail"]


@pytest.mark.parametrize("length", [1530, 1531])
def test_the_longest_text_that_fits_is_still_counted_exactly(tmp_path: Path, length: int) -> None:
    checker = ContactChecker(template=None, country="ZA", networks=NetworkDirectory(), max_parts=10)
    outcome = checker.check(RawContact(0, "27831234567", None, {}, "x" * length))
    assert (outcome.code is None) == (length == 1530)
