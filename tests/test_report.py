"""sftpsms/report.py: writing a report file."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from sftpsms.report import write_json_atomically


def test_two_writers_of_one_report_at_once_both_succeed_and_leave_one_whole_file(tmp_path: Path) -> None:
    """A cancel's REST answer and the dispatcher's callback refile the same report at the same
    moment: with one shared temporary name, the second rename found it gone (a 500 in CI)."""
    path = tmp_path / "scheduled.json.report.json"
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def write(n: int) -> None:
        try:
            barrier.wait()
            for i in range(50):
                write_json_atomically(path, {"writer": n, "round": i, "pad": "x" * 4096})
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert json.loads(path.read_text())["round"] == 49
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary left behind
