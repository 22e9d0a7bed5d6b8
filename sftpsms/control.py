"""Cancel, pause and resume of a processed file's dispatch (issue 12): the control-file names and
the rules of which request is allowed when. Pure: the store and the actors apply them."""

from __future__ import annotations

from dataclasses import dataclass

ACTIONS = ("cancel", "pause", "resume")
CONTROL_SUFFIXES = tuple(f".{action}" for action in ACTIONS)

# The codes a refused request answers with (docs/file-format.md, "Cancel, pause, resume").
UNKNOWN_FILE = "Control.UnknownFile"  # no processed file of that name for the account
NOT_ALLOWED = "Control.NotAllowed"  # the file's state does not allow it (resume after cancel, ...)

# What each state answers to each request: None = recorded, else why not (a repeated pause or
# cancel is answered as done, without a second event).
ALREADY = "already"


class ControlRefused(Exception):
    """A request that cannot be honoured, with its code and a detail for the user."""

    def __init__(self, code: str, detail: str, *, in_progress: bool = False) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail
        self.in_progress = in_progress  # the file is still being processed: asking later may work


@dataclass(frozen=True)
class ControlName:
    """A control file `<name>.<action>` uploaded into Send_SMS: the file it names and the action."""

    target: str
    action: str


def control_name(name: str) -> ControlName | None:
    """`contacts.json.cancel` → (contacts.json, cancel); None for any other name. The suffix
    matches in any case, like the upload suffixes."""
    lowered = name.lower()
    for action, suffix in zip(ACTIONS, CONTROL_SUFFIXES, strict=True):
        if lowered.endswith(suffix) and len(name) > len(suffix):
            return ControlName(name[: -len(suffix)], action)
    return None


def is_control(name: str) -> bool:
    return control_name(name) is not None


def check_request(action: str, state: str, *, name: str) -> bool:
    """Whether `action` on a file whose dispatch is `state` ("running", "paused", "cancelled")
    is to be recorded (True), or is already so (False: answered as done). Raises ControlRefused
    when it cannot be."""
    if action not in ACTIONS:
        raise ControlRefused(NOT_ALLOWED, f"the action is one of {', '.join(ACTIONS)}, not {action!r}")
    if state == "cancelled":
        if action == "cancel":
            return False
        raise ControlRefused(NOT_ALLOWED, f"{name} was cancelled: a cancelled file cannot be {action}d")
    if action == "pause":
        return state != "paused"
    if action == "resume":
        if state != "paused":
            raise ControlRefused(NOT_ALLOWED, f"{name} is not paused: nothing to resume")
        return True
    return True


def unknown_file(name: str, account: str, status: str | None = None) -> ControlRefused:
    """The answer for a name the account has no processed file of (or one still in progress)."""
    if status is None:
        detail = f"account {account} has no file named {name!r}"
    elif status in ("received", "accepted"):
        detail = f"{name} is still being processed: try again once its report is in Processed"
    else:
        detail = f"{name} failed as a whole (it is in Errors): nothing of it is sent"
    return ControlRefused(UNKNOWN_FILE, detail, in_progress=status in ("received", "accepted"))


def outcome_text(action: str, *, name: str, done: bool, messages_cancelled: int, credits_refunded: int) -> str:
    """The one-line answer once a request is honoured (or was already so)."""
    if action == "cancel":
        if not done:
            return f"{name} was already cancelled"
        return (
            f"{name} cancelled: {messages_cancelled} messages not yet sent expired, "
            f"{credits_refunded} credits refunded; messages already at the gateway are reported as they end"
        )
    if action == "pause":
        return f"{name} paused: nothing more is sent until it is resumed (End still applies)" if done else f"{name} was already paused"
    return f"{name} resumed: its unsent messages go out again"
