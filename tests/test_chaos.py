"""scripts/chaos, small: a 2 000-contact file through the real service, SIGKILLed three times across
ingest and dispatch; every total must come out exact. And the proof does catch what it checks."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from sftpsms.config import Settings

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "chaos.py"
CONTACTS = 2000


def load_chaos() -> ModuleType:
    spec = importlib.util.spec_from_file_location("chaos_script", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def chaos_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModuleType, Path, int]:
    chaos = load_chaos()
    data = tmp_path_factory.mktemp("chaos") / "data"
    code = chaos.main(["--contacts", str(CONTACTS), "--kills", "3", "--seed", "5", "--send-rate", "500",
                       "--data-dir", str(data), "--timeout", "120", "--settle", "10"])
    return chaos, data, code


def test_three_kills_across_ingest_and_dispatch_lose_and_duplicate_nothing(
    chaos_run: tuple[ModuleType, Path, int], capsys: pytest.CaptureFixture[str]
) -> None:
    chaos, data, code = chaos_run
    totals = chaos.prove(data, CONTACTS)
    assert totals.problems() == [], "\n".join(totals.lines())
    assert code == 0
    assert len(totals.queued) == len(totals.submitted) == len(totals.reported) == len(totals.accepted) == CONTACTS
    assert set(totals.reported.values()) == {1} and set(totals.submitted.values()) == {1}
    parts = CONTACTS + CONTACTS // chaos.LONG_EVERY
    assert totals.parts_sent == totals.reserved - totals.refunded == parts and totals.balance == 0
    assert (data / "server.log").read_text().count("sftp listening") == 4, "three kills, four starts"


def test_the_proof_catches_a_message_the_simulator_got_twice_and_one_without_a_status(
    chaos_run: tuple[ModuleType, Path, int],
) -> None:
    chaos, data, _ = chaos_run
    journal = Settings.from_env(data_dir=data).simulator_dir / "accepted.log"
    first = journal.read_text().splitlines()[0]
    with journal.open("a") as out:
        out.write(first + "\n")
    totals = chaos.prove(data, CONTACTS)
    assert any(p.startswith("simulator accepted: 0 missing, 1 more than once") for p in totals.problems())
    totals.reported.pop(first.split(" ")[0])
    assert any(p.startswith("final status: 1 missing") for p in totals.problems())
    totals.refunded += 1
    assert any(p.startswith("credits:") for p in totals.problems())
