"""Pass 1 over an uploaded file: validate every contact, price the send, decide, and spool outcomes.

The file is streamed once (memory flat); each contact's outcome goes to a spool file (one JSON line,
see Outcome.to_line) that pass 2 turns into events, so both passes see exactly the same decisions even if the opt-out
list changes in between. Whole-file decisions (Max_Errors, template, credits, nothing to send) are
made here, before anything is queued.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Generator, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import orjson

from sftpsms.credits import shortfall
from sftpsms.errors import ErrorCode, FileRejected
from sftpsms.fileformat import Header, RawContact, iter_contacts, read_header
from sftpsms.gsm import (
    CONCATENATED_PART_SEPTETS,
    SINGLE_PART_SEPTETS,
    count_parts,
    count_ucs2_parts,
    find_non_gsm,
)
from sftpsms.limits import DEFAULT_LIMITS, Limits
from sftpsms.numbers import NetworkDirectory, normalise_msisdn, own_mobile_reader, own_mobile_test
from sftpsms.schedule import check_schedule, parse_timestamp
from sftpsms.template import Template, TemplateInvalid

OPTOUT_LOOKUP_BATCH = 1000
CHECKPOINT_EVERY = 20_000  # contacts between two checkpoints of pass 1 (a small JSON each)
DEFAULT_MAX_PARTS = 10
SENDER_ALPHANUMERIC = re.compile(r"[A-Za-z0-9 ]{1,11}")
SENDER_NUMERIC = re.compile(r"\+?[0-9]{1,15}")
FIXED_SENDER = "Fixed"


@dataclass(frozen=True)
class AccountPolicy:
    """What pass 1 needs to know about the sending account."""

    username: str
    country: str
    allow_custom_sender: bool
    balance: int
    sender_ids: frozenset[str] = frozenset()  # allowed one by one (sftpsms senderid allow)
    unicode: bool = False  # text outside GSM 03.38 goes as UCS-2 (sftpsms account unicode)


# Built a million times per big file: slots, and not frozen (a frozen dataclass sets each field
# through object.__setattr__, 0.3 µs more per contact); nothing changes an Outcome once made.
@dataclass(slots=True)
class Outcome:
    """One contact's fate. `code` None means a message is queued; MSISDN.Optout means skipped."""

    index: int
    msisdn: str | None
    customer_id: str | None
    text: str | None = None
    parts: int = 0
    code: str | None = None
    detail: str | None = None

    def to_line(self) -> str:
        """The spool line: a queued message as an object of its fields, in the order of the
        MessageQueued event (pass 2 stores the line's bytes behind the event's timestamp, without
        parsing it: eventstore.contact_rows); any other outcome as an array of all seven fields."""
        if self.code is None:
            message = {
                "index": self.index,
                "msisdn": self.msisdn or "",  # always set for a queued message
                "customer_id": self.customer_id,
                "text": self.text or "",
                "parts": self.parts,
            }
            return orjson.dumps(message).decode()
        return orjson.dumps(
            [self.index, self.msisdn, self.customer_id, self.text, self.parts, self.code, self.detail]
        ).decode()

    @classmethod
    def from_line(cls, line: str | bytes) -> Outcome:
        fields = orjson.loads(line)
        if isinstance(fields, dict):
            return cls(fields["index"], fields["msisdn"], fields["customer_id"], fields["text"], fields["parts"])
        index, msisdn, customer_id, text, parts, code, detail = fields
        return cls(index, msisdn, customer_id, text, parts, code, detail)

    @property
    def is_optout(self) -> bool:
        return self.code == ErrorCode.OPTOUT

    def error(self) -> dict[str, Any]:
        return {"index": self.index, "msisdn": self.msisdn, "code": self.code, "detail": self.detail}


@dataclass
class Plan:
    """The result of pass 1: counts, the decision inputs, and where the outcomes were spooled."""

    header: Header
    sender_id: str
    not_before: datetime | None
    expires_at: datetime | None
    spool: Path
    contacts: int = 0
    messages: int = 0
    rejected: int = 0
    optouts: int = 0
    parts: int = 0
    first_errors: list[dict[str, Any]] = field(default_factory=list)
    ucs2_messages: int = 0  # of `messages`, those sent as UCS-2 ...
    ucs2_parts: int = 0  # ... and their parts (counted in `parts` too)

    @property
    def credits(self) -> int:
        return self.parts


class PlanFailed(FileRejected):
    """Pass 1 failed the file as a whole; `plan` holds what was counted up to that point."""

    def __init__(self, error: FileRejected, plan: Plan) -> None:
        super().__init__(error.code, error.detail)
        self.plan = plan


class ContactChecker:
    """Validates one contact into an Outcome (without the opt-out lookup, which is batched)."""

    def __init__(
        self,
        *,
        template: Template | None,
        country: str,
        networks: NetworkDirectory,
        max_parts: int,
        unicode: bool = False,
    ) -> None:
        self.template = template
        self.country = country
        self.networks = networks
        self.max_parts = max_parts
        self.unicode = unicode
        self.is_own_mobile = own_mobile_test(country)  # the usual case, tested first
        self.read_own_mobile = own_mobile_reader(country)
        # Past this many characters no text fits in max_parts (each character is one septet or
        # two): told at once, before the GSM check and the part count walk a long template's
        # rendering for every contact (a 60 kB template cost 0.4 ms per contact).
        self.max_chars = max(SINGLE_PART_SEPTETS, CONCATENATED_PART_SEPTETS * max_parts)

    def check(self, raw: RawContact) -> Outcome:
        index, customer_id = raw.index, raw.customer_id
        if raw.problem is not None:
            return Outcome(index, raw.msisdn, customer_id, code=ErrorCode.PARSE_ERROR, detail=raw.problem)
        if not raw.msisdn:
            return Outcome(
                index, None, customer_id, code=ErrorCode.REQUIRED_PARAMETER_MISSING, detail="msisdn is missing"
            )
        msisdn = raw.msisdn
        if self.is_own_mobile(msisdn):  # its own E.164 form, and has a network
            pass
        elif (own := self.read_own_mobile(msisdn)) is not None:  # `082...`, `+27 82...`: the same
            msisdn = own
        else:
            normal = normalise_msisdn(msisdn, self.country)
            if normal is None:
                return Outcome(index, msisdn, customer_id, code=ErrorCode.NO_NETWORK, detail="not a phone number")
            msisdn = normal
            if not self.networks.has_network(msisdn):
                return Outcome(
                    index, msisdn, customer_id, code=ErrorCode.NO_NETWORK, detail="no network for this number"
                )
        if raw.message is not None:
            text = raw.message
        elif self.template is not None:
            text = self.template.render(raw.values)
        else:
            raise FileRejected(
                ErrorCode.REQUIRED_PARAMETER_MISSING,
                f"Message_Template is required: contact {index} has no message",
            )
        if not text.strip():
            return Outcome(index, msisdn, customer_id, code=ErrorCode.PARSE_ERROR, detail="message text is empty")
        if len(text) > self.max_chars:
            return Outcome(
                index,
                msisdn,
                customer_id,
                code=ErrorCode.PARSE_ERROR,
                detail=f"message of {len(text)} characters needs more parts than the limit of {self.max_parts}",
            )
        bad = find_non_gsm(text)
        if bad is None:
            parts = count_parts(text)
        elif self.unicode:  # UCS-2: 70 code units alone, 67 per part concatenated (sftpsms.gsm)
            parts = count_ucs2_parts(text)
        else:
            return Outcome(
                index,
                msisdn,
                customer_id,
                code=ErrorCode.PARSE_ERROR,
                detail=f"character {bad!r} (U+{ord(bad):04X}) is not in the GSM 03.38 alphabet",
            )
        if parts > self.max_parts:
            return Outcome(
                index,
                msisdn,
                customer_id,
                code=ErrorCode.PARSE_ERROR,
                detail=f"message needs {parts} parts, more than the limit of {self.max_parts}",
            )
        return Outcome(index, msisdn, customer_id, text=text, parts=parts)


def check_sender(sender_id: str, policy: AccountPolicy) -> str:
    if sender_id.casefold() == FIXED_SENDER.casefold():
        return FIXED_SENDER
    if not (SENDER_ALPHANUMERIC.fullmatch(sender_id) or SENDER_NUMERIC.fullmatch(sender_id)):
        raise FileRejected(
            ErrorCode.PARSE_ERROR,
            f"SenderID {sender_id!r} must be Fixed, up to 11 letters and digits, or up to 15 digits",
        )
    if not policy.allow_custom_sender and sender_id not in policy.sender_ids:
        raise FileRejected(
            ErrorCode.PARSE_ERROR,
            f"SenderID {sender_id!r} is not allowed for this account (allowed: Fixed"
            + "".join(f", {name}" for name in sorted(policy.sender_ids))
            + ")",
        )
    return sender_id


def header_template(header: Header) -> Template | None:
    """The file's Message_Template, parsed; None when it has none. Raises TemplateInvalid."""
    if header.message_template is None or header.message_template == "":
        return None
    return Template.parse(header.message_template)


# How pass 1 turns the contacts into outcomes, in file order: `check_all` here, or
# actors.pass_one's split across processes, which yields the outcomes of this process's part and
# then the Tally of each batch the workers checked: the same outcomes, counts and errors.
CheckContacts = Callable[[Path, Header, ContactChecker], Generator["Outcome | Tally", None, None]]


def check_all(path: Path, header: Header, checker: ContactChecker) -> Generator[Outcome | Tally, None, None]:
    for raw in iter_contacts(path, header):
        yield checker.check(raw)


def read_plan_header(
    path: Path, *, policy: AccountPolicy, now: datetime, limits: Limits = DEFAULT_LIMITS
) -> tuple[Header, Template | None, str, datetime | None, datetime | None]:
    """File-level checks, in the order a user would fix them."""
    header = read_header(path, limits)
    sender = check_sender(header.sender_id, policy)
    start = parse_timestamp(header.start) if header.start else None
    end = parse_timestamp(header.end) if header.end else None
    check_schedule(start, end, now)
    try:
        template = header_template(header)
    except TemplateInvalid as error:
        raise FileRejected(ErrorCode.PARSE_ERROR, f"Message_Template: {error}") from None
    not_before = start if start is not None and start > now else None
    return header, template, sender, not_before, end


@dataclass(frozen=True)
class Checkpoint:
    """How far pass 1 had got: the first `contacts` contacts are counted and their lines are the
    first `spool_bytes` bytes of the spool. Pass 1 resumes from one (plan_file's `resume`) instead
    of starting again, after a stop or crash."""

    contacts: int
    spool_bytes: int
    messages: int
    rejected: int
    optouts: int
    parts: int
    first_errors: list[dict[str, Any]]
    ucs2_messages: int = 0  # absent in checkpoints written before UCS-2
    ucs2_parts: int = 0

    @classmethod
    def of(cls, plan: Plan, spool_bytes: int) -> Checkpoint:
        return cls(
            plan.contacts, spool_bytes, plan.messages, plan.rejected, plan.optouts, plan.parts, list(plan.first_errors),
            plan.ucs2_messages, plan.ucs2_parts,
        )


def resume_from(start: int) -> CheckContacts:
    """Check the contacts from index `start` on, in this thread (the ones before were checked
    by an earlier, interrupted pass 1)."""

    def check_rest(path: Path, header: Header, checker: ContactChecker) -> Generator[Outcome | Tally, None, None]:
        for raw in iter_contacts(path, header, start=start):
            yield checker.check(raw)

    return check_rest


def plan_file(
    path: Path,
    *,
    policy: AccountPolicy,
    networks: NetworkDirectory,
    opted_out: Callable[[list[str]], set[str]],
    now: datetime,
    spool: Path,
    max_parts: int = DEFAULT_MAX_PARTS,
    progress: Callable[[int], None] | None = None,
    check_contacts: CheckContacts = check_all,
    resume: Checkpoint | None = None,
    checkpoint: Callable[[Checkpoint], None] | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> Plan:
    """Pass 1. Raises FileRejected for a failure found before contacts are read, PlanFailed (with
    the counts so far, for the report) for one found while or after reading them.

    With `resume` (from a checkpoint of an earlier pass 1 of the same file), the counts and the
    spool up to it are kept and `check_contacts` must check the contacts after it
    (`resume_from`). `checkpoint` is called every CHECKPOINT_EVERY contacts, with the spool
    flushed up to the checkpoint."""
    header, template, sender, not_before, expires_at = read_plan_header(path, policy=policy, now=now, limits=limits)
    plan = Plan(header=header, sender_id=sender, not_before=not_before, expires_at=expires_at, spool=spool)
    checker = ContactChecker(
        template=template, country=policy.country, networks=networks, max_parts=max_parts, unicode=policy.unicode
    )
    if resume is not None:
        plan.contacts, plan.messages, plan.rejected = resume.contacts, resume.messages, resume.rejected
        plan.optouts, plan.parts, plan.first_errors = resume.optouts, resume.parts, list(resume.first_errors)
        plan.ucs2_messages, plan.ucs2_parts = resume.ucs2_messages, resume.ucs2_parts
    checkpointed = plan.contacts

    def progressed(out: IO[str]) -> None:
        nonlocal checkpointed
        if checkpoint is not None and plan.contacts - checkpointed >= CHECKPOINT_EVERY:
            out.flush()
            checkpoint(Checkpoint.of(plan, out.tell()))
            checkpointed = plan.contacts
        if progress is not None:
            progress(plan.contacts)

    try:
        with _open_spool(spool, resume) as out, closing(check_contacts(path, header, checker)) as outcomes:
            pending: list[Outcome] = []
            for outcome in outcomes:
                if isinstance(outcome, Tally):  # a batch a worker process checked and looked up
                    _flush(pending, plan, header, opted_out, out)
                    pending = []
                    count(plan, header, outcome, out)
                    progressed(out)
                    continue
                pending.append(outcome)
                if len(pending) >= OPTOUT_LOOKUP_BATCH:
                    _flush(pending, plan, header, opted_out, out)
                    pending = []
                    progressed(out)
            _flush(pending, plan, header, opted_out, out)
        if plan.contacts == 0:
            raise FileRejected(ErrorCode.REQUIRED_PARAMETER_MISSING, "Contacts is empty")
        if plan.messages == 0:
            raise FileRejected(
                ErrorCode.EMPTY_SEND,
                f"no valid message to send: {plan.rejected} contact errors, {plan.optouts} opted out",
            )
        short = shortfall("the file", plan.credits, policy.balance)
        if short is not None:
            raise FileRejected(ErrorCode.INSUFFICIENT_CREDITS, short)
    except FileRejected as error:
        raise PlanFailed(error, plan) from None
    return plan


def _open_spool(spool: Path, resume: Checkpoint | None) -> IO[str]:
    if resume is None:
        return spool.open("w", encoding="utf-8")
    out = spool.open("r+", encoding="utf-8")
    out.truncate(resume.spool_bytes)
    out.seek(resume.spool_bytes)
    return out


@dataclass
class Tally:
    """One batch of outcomes with its opt-outs applied: what it adds to a plan, and its spool lines.
    `_flush` makes and counts one per OPTOUT_LOOKUP_BATCH contacts; a pass-one worker makes them
    for its part and this process counts them in order (actors/pass_one.py)."""

    contacts: int = 0
    messages: int = 0
    parts: int = 0
    optouts: int = 0
    errors: list[tuple[int, dict[str, Any]]] = field(default_factory=list)  # (position, error) per rejection
    optout_errors: list[dict[str, Any]] = field(default_factory=list)  # not errors, but reported with them
    lines: list[str] = field(default_factory=list)
    ucs2_messages: int = 0
    ucs2_parts: int = 0


def tally(outcomes: list[Outcome], header: Header, opted_out: Callable[[list[str]], set[str]]) -> Tally:
    """Look the batch's numbers up in the opt-outs (when the file asks for it) and count it."""
    if header.check_optouts:
        candidates = [o.msisdn for o in outcomes if o.code is None and o.msisdn]
        blocked = opted_out(candidates) if candidates else set()
        if blocked:
            outcomes = [
                Outcome(o.index, o.msisdn, o.customer_id, code=ErrorCode.OPTOUT, detail="the number has opted out")
                if o.code is None and o.msisdn in blocked
                else o
                for o in outcomes
            ]
    batch = Tally(contacts=len(outcomes))
    for position, outcome in enumerate(outcomes):
        if outcome.code is None:
            batch.messages += 1
            batch.parts += outcome.parts
            if find_non_gsm(outcome.text or "") is not None:  # queued outside GSM: the account's UCS-2
                batch.ucs2_messages += 1
                batch.ucs2_parts += outcome.parts
        elif outcome.is_optout:
            batch.optouts += 1
            batch.optout_errors.append(outcome.error())
        else:
            batch.errors.append((position, outcome.error()))
        batch.lines.append(outcome.to_line())
    return batch


def count(plan: Plan, header: Header, batch: Tally, out: IO[str]) -> None:
    """Add a batch to the plan and its lines to the spool; Max_Errors fails the file at the very
    contact that exceeds it (the plan then counts the contacts up to that one)."""
    for position, error in batch.errors:
        plan.rejected += 1
        if len(plan.first_errors) < 1000:
            plan.first_errors.append(error)
        if header.max_errors is not None and plan.rejected > header.max_errors:
            plan.contacts += position + 1
            raise FileRejected(
                ErrorCode.PARSE_ERROR,
                f"more than Max_Errors={header.max_errors} contact errors (stopped at contact {error['index']})",
            )
    plan.contacts += batch.contacts
    plan.messages += batch.messages
    plan.parts += batch.parts
    plan.ucs2_messages += batch.ucs2_messages
    plan.ucs2_parts += batch.ucs2_parts
    plan.optouts += batch.optouts
    # A file that fails (e.g. everyone opted out) reports its opt-outs as a processed one does.
    plan.first_errors.extend(batch.optout_errors[: max(0, 1000 - len(plan.first_errors))])
    if batch.lines:
        out.write("\n".join(batch.lines))
        out.write("\n")


def _flush(
    outcomes: list[Outcome],
    plan: Plan,
    header: Header,
    opted_out: Callable[[list[str]], set[str]],
    out: IO[str],
) -> None:
    if outcomes:
        count(plan, header, tally(outcomes, header, opted_out), out)


def read_spool(spool: Path) -> Iterator[Outcome]:
    with spool.open(encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                yield Outcome.from_line(line)
