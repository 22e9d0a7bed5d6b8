"""Pass 1 interrupted and resumed from its last checkpoint plans and spools exactly as one pass
that ran through (sftpsms.intake's Checkpoint, resume_from)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from eventstore.projections import ReadModels
from sftpsms.intake import CHECKPOINT_EVERY, Checkpoint, PlanFailed, plan_file, resume_from
from sftpsms.numbers import NetworkDirectory
from tests.test_pass_one import NOW, POLICY, contact, read_models, write


class Interrupted(Exception):
    pass


def run(path: Path, tmp_path: Path, spool: Path, **kwargs: Any) -> tuple[Any, ...]:
    models = ReadModels(read_models(tmp_path))
    try:
        plan = plan_file(
            path,
            policy=POLICY,
            networks=NetworkDirectory(),
            opted_out=lambda numbers: models.opted_out("acme", numbers),
            now=NOW,
            spool=spool,
            **kwargs,
        )
    except PlanFailed as failure:
        return ("failed", failure.code, failure.detail, failure.plan.contacts, failure.plan.first_errors)
    finally:
        models.close()
    return ("planned", plan.contacts, plan.messages, plan.rejected, plan.optouts, plan.parts, plan.first_errors)


@pytest.mark.parametrize("max_errors", [None, 25_000])  # about half the contacts are errors
def test_a_pass_one_resumed_from_its_checkpoint_plans_and_spools_like_one_pass(
    tmp_path: Path, max_errors: int | None
) -> None:
    count = 3 * CHECKPOINT_EVERY + 1234
    header = {} if max_errors is None else {"Max_Errors": max_errors}
    path = write(tmp_path, [contact(i) for i in range(count)], **header)
    whole = run(path, tmp_path, tmp_path / "whole.jsonl")
    assert whole[0] == ("planned" if max_errors is None else "failed")

    spool = tmp_path / "resumed.jsonl"
    checkpoints: list[Checkpoint] = []

    def stop_after_first(done: int) -> None:
        if checkpoints and done > checkpoints[0].contacts + 3000:
            raise Interrupted  # a stop between two checkpoints: the lines after the first are lost

    with pytest.raises(Interrupted):
        run(path, tmp_path, spool, checkpoint=checkpoints.append, progress=stop_after_first)
    resume = checkpoints[0]
    assert resume.contacts == CHECKPOINT_EVERY and spool.stat().st_size > resume.spool_bytes
    resumed = run(path, tmp_path, spool, resume=resume, check_contacts=resume_from(resume.contacts))
    assert resumed == whole
    assert spool.read_bytes() == (tmp_path / "whole.jsonl").read_bytes()
