"""The rules of cancel, pause and resume (sftpsms.control) and the control-file names the doors take."""

from __future__ import annotations

import pytest

from sftpsms import folders
from sftpsms.control import NOT_ALLOWED, ControlName, ControlRefused, check_request, control_name


def test_a_control_name_names_its_file_and_action_in_any_case() -> None:
    assert control_name("contacts.json.cancel") == ControlName("contacts.json", "cancel")
    assert control_name("Contacts.JSON.Pause") == ControlName("Contacts.JSON", "pause")
    assert control_name("a.zip.RESUME") == ControlName("a.zip", "resume")
    assert control_name(".cancel") is None
    assert control_name("contacts.json") is None


def test_the_doors_take_control_files_but_not_their_answers() -> None:
    assert folders.upload_refusal("contacts.json.cancel") is None
    assert folders.is_allowed("contacts.json.pause") and folders.is_allowed("x.resume")
    assert folders.upload_refusal("contacts.json.cancel.report.json") is not None  # the service's answer
    assert not folders.is_allowed("contacts.json.cancel.part")  # processed once renamed
    refusal = folders.upload_refusal("contacts.json.stop")
    assert refusal is not None and ".cancel" in refusal


@pytest.mark.parametrize(
    ("action", "state", "recorded"),
    [
        ("cancel", "running", True),
        ("cancel", "paused", True),
        ("cancel", "cancelled", False),  # already so: answered as done
        ("pause", "running", True),
        ("pause", "paused", False),
        ("resume", "paused", True),
    ],
)
def test_allowed_requests_are_recorded_once(action: str, state: str, recorded: bool) -> None:
    assert check_request(action, state, name="f.json") is recorded


@pytest.mark.parametrize(("action", "state"), [("resume", "cancelled"), ("pause", "cancelled"), ("resume", "running")])
def test_a_cancelled_file_is_never_resumed_or_paused_and_only_a_paused_one_resumed(action: str, state: str) -> None:
    with pytest.raises(ControlRefused) as refused:
        check_request(action, state, name="f.json")
    assert refused.value.code == NOT_ALLOWED and "f.json" in refused.value.detail
