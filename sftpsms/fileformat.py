"""The version-7 upload format, read as a stream so memory stays flat in the number of contacts."""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import accumulate, count
from pathlib import Path
from types import TracebackType
from typing import IO, Any, TypeVar, cast

import ijson

from sftpsms.errors import ErrorCode, FileRejected
from sftpsms.keys import coerce_bool, coerce_int, coerce_str, describe, normalise_key
from sftpsms.limits import DEFAULT_LIMITS, Limits

SUPPORTED_VERSION = 7
DEFAULT_SENDER_ID = "Fixed"
UTF8_BOM = b"\xef\xbb\xbf"
JSON_WHITESPACE = b" \t\r\n"
# Header bytes read again to locate the contacts `[`; a file with more before its contacts than
# this takes the exact slow path rather than holding that much in memory.
MAX_HEADER_BYTES = 8 << 20
# How much of the file's end is examined for the closing `]` `}`.
TAIL_BYTES = 4096
# The bracket scan's chunk: small enough that a contact larger than max_contact_bytes is caught
# within a chunk or two of its limit (see _Guard), large enough that the per-chunk cost is nothing.
SCAN_CHUNK_BYTES = 256 << 10
# Depth of a contact: inside the file's object (1) and its contacts array (2).
CONTACT_DEPTH = 3
# Rounds of matched-pair removal before the guard measures depth exactly (a usual file needs 2).
QUICK_DEPTH_ROUNDS = 4
FIELD_NAMES = {
    "version": "Version",
    "email": "Email",
    "start": "Start",
    "end": "End",
    "senderid": "SenderID",
    "checkoptouts": "Check_OptOuts",
    "messagetemplate": "Message_Template",
    "contacts": "Contacts",
    "maxerrors": "Max_Errors",
}
CONTACT_VALUE_KEYS = frozenset(f"value{n}" for n in range(1, 7))
_STARTS = frozenset({"start_map", "start_array"})
_ENDS = frozenset({"end_map", "end_array"})
# A JSON string (escapes included) or a bracket: enough to walk the header's structure in C.
_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.DOTALL)
_NOT_MARKS = bytes(b for b in range(256) if b not in b'[]{}"')
# Characters of a JSON number as `#`, everything else (quotes included) as `.`.
_NUMBER_CHARS = bytes(ord("#") if chr(b) in "-+.0123456789eE" else ord(".") for b in range(256))
# Brackets as steps for the exact depth profile: an opener 2, a closer 0 (accumulated, minus the
# count of marks so far, that is the depth change).
_STEPS = bytes.maketrans(b"[]{}", b"\x02\x00\x02\x00")


@dataclass(frozen=True)
class Header:
    """Every file-level field, validated and with its default applied."""

    version: int
    email: str | None
    start: str | None  # raw text; sftpsms.schedule parses it
    end: str | None
    sender_id: str
    check_optouts: bool
    message_template: str | None
    max_errors: int | None  # None: unlimited
    warnings: tuple[str, ...]
    contacts_key: str  # the contacts key as spelled in the file (the `ijson.items` prefix)
    limits: Limits = DEFAULT_LIMITS  # those read_header checked the file against; iter_contacts applies the rest


# Built a million times per big file: slots, and not frozen (a frozen dataclass sets each field
# through object.__setattr__, 0.3 µs more per contact); nothing changes a RawContact once made.
@dataclass(slots=True)
class RawContact:
    """One contact as given; `problem` set means a contact-level File.ParseError with that detail."""

    index: int
    msisdn: str | None
    customer_id: str | None
    values: dict[str, str]
    message: str | None
    problem: str | None = None


class _Container:
    """Stands for an object or array value at the top level, which no header field may be."""

    def __repr__(self) -> str:
        return "an object or an array"


_CONTAINER = _Container()
_END = object()


@dataclass
class _TopLevel:
    """What the header loop has seen so far, in file order."""

    values: dict[str, tuple[str, object]] = field(default_factory=dict)  # normalised -> (spelling, value)
    contacts_key: str | None = None
    contacts_empty: bool = False
    arrays_before_contacts: int = 0  # top-level `[`s before the contacts one, to find its offset
    limits: Limits = DEFAULT_LIMITS


class _Guard:
    """The limits that must hold before ijson sees the bytes, checked at C speed chunk by chunk.

    ijson's C backend builds a prefix string per event (memory and time grow with the square of the
    nesting depth), converts a number's digits in full (Python's 4 300-digit limit then crashes it),
    and builds a whole contact or string in memory before Python sees it. So every byte is checked
    here first: nesting depth, the length of each string (keys included) and of each run of bytes
    between strings (where numbers are), and how long the file stays at contact depth or deeper.

    Per chunk: escapes that matter are dropped (`\\\\`, `\\"`, so every remaining `"` delimits a
    string; a run of backslashes at the chunk's end waits for the next chunk), the chunk is split on
    quotes (string and non-string segments alternate; their longest lengths are taken in C), and the
    non-string segments' brackets are reduced by removing matched pairs. A few rounds of removal
    bound the depth reached from above (each round peels one or two layers); only a chunk that may
    be near the limit is measured exactly (an accumulated step profile, still in C). Where the bytes
    are not valid JSON, yajl stops at the first fault, and up to there this view of them is yajl's:
    whatever ijson parses has been checked.

    Raises FileRejected(File.Corrupt) naming the limit."""

    def __init__(self, limits: Limits, depth: int = 0) -> None:
        self.limits = limits
        self.depth = depth
        self.in_string = False
        self.carry = b""  # trailing backslashes, scanned with the next chunk
        self.run = 0  # bytes of the segment (string or not) still open at the end of the last chunk
        self.tail = b""  # the end of that segment when it is not a string (a number may go on)
        self.deep = 0  # bytes of whole chunks spent at contact depth or deeper, without a break

    def feed(self, chunk: bytes) -> int:
        """Check the next bytes of the file. Returns the lowest depth reached in them."""
        limits = self.limits
        size = len(chunk)
        chunk = self.carry + chunk
        kept = chunk.rstrip(b"\\")
        self.carry, chunk = chunk[len(kept) :], kept
        if b"\\" in chunk:
            # Left to right, `\\` pairs first: exactly how JSON pairs backslashes in a string.
            chunk = chunk.replace(b"\\\\", b"").replace(b'\\"', b"")
        marks = chunk.translate(None, _NOT_MARKS)
        quotes = marks.count(b'"')
        self._check_strings(chunk, quotes)
        self._check_numbers(chunk)
        # An empty segment between two quotes holds no bracket: dropping it keeps every bracket on
        # its side of the string boundaries. Most strings hold no bracket, so this leaves few quotes.
        marks = marks.replace(b'""', b"")
        if b'"' in marks:
            pieces = marks.split(b'"')
            marks = b"".join(pieces[1::2] if self.in_string else pieces[0::2])
        elif self.in_string:
            marks = b""
        self.in_string ^= quotes % 2 == 1
        lowest = self._check_depth(marks)
        if lowest >= CONTACT_DEPTH and self.depth >= CONTACT_DEPTH:
            self.deep += size
            if self.deep > limits.max_contact_bytes:
                raise FileRejected(
                    ErrorCode.CORRUPT,
                    f"a contact is larger than the limit of {limits.max_contact_bytes} bytes (max_contact_bytes)",
                )
        else:
            self.deep = 0
        return lowest

    def _check_strings(self, chunk: bytes, quotes: int) -> None:
        """Each string no longer than the limit. A segment between quotes at least twice a block
        long holds a whole block without a quote, so only such blocks (found by memchr) are
        measured, exactly; the segments cut by the chunk's ends carry over in `run`."""
        limit = self.limits.max_string_bytes
        if quotes == 0:
            self.run += len(chunk)
            if self.in_string and self.run > limit:
                raise _too_long_string(limit)
            return
        first, last = chunk.find(b'"'), chunk.rfind(b'"')
        if self.in_string and self.run + first > limit:
            raise _too_long_string(limit)
        block = max(1, (limit + 1) // 2)
        counted = counted_to = 0  # quotes in chunk[:counted_to]
        at = first + 1
        while at + block <= last:
            if chunk.find(b'"', at, at + block) != -1:
                at += block
                continue
            start = chunk.rfind(b'"', 0, at) + 1
            end = chunk.find(b'"', at + block)
            counted += chunk.count(b'"', counted_to, start)
            counted_to = start
            if self.in_string != (counted % 2 == 1) and end - start > limit:
                raise _too_long_string(limit)
            at = end + 1
        self.run = len(chunk) - last - 1
        if self.in_string != (quotes % 2 == 1) and self.run > limit:
            raise _too_long_string(limit)

    def _check_numbers(self, chunk: bytes) -> None:
        """No number longer than the limit: a run of number characters that long, outside a string
        (translated in C, then searched for; a run inside a string is passed over)."""
        limit = self.limits.max_number_chars
        needle = b"#" * (limit + 1)
        runs = chunk.translate(_NUMBER_CHARS)
        across = self.tail + runs[:limit]  # a run across the boundary ends in the first `limit` bytes
        at = across.find(needle)
        if at != -1:
            end = at + limit - len(self.tail)
            self._check_run(chunk, end, chunk.count(b'"', 0, end))
        self.tail = (across if len(runs) < limit else runs)[-limit:]
        counted = counted_to = 0  # quotes in chunk[:counted_to]
        at = runs.find(needle)
        while at != -1:
            end = at + limit  # the run's last byte
            counted += chunk.count(b'"', counted_to, end)
            counted_to = end
            closing = self._check_run(chunk, end, counted)
            if closing == -1:
                break
            at = runs.find(needle, closing)

    def _check_run(self, chunk: bytes, end: int, counted: int) -> int:
        """A run of number characters reaching chunk[end] (`counted` quotes before it) is a number
        over the limit unless it is in a string; returns where that string ends."""
        if self.in_string == (counted % 2 == 1):
            raise FileRejected(
                ErrorCode.CORRUPT,
                f"a number is longer than the limit of {self.limits.max_number_chars} characters (max_number_chars)",
            )
        return chunk.find(b'"', end)

    def _check_depth(self, marks: bytes) -> int:
        depth, limit = self.depth, self.limits.max_json_depth
        if not marks:
            return depth
        reduced, rounds = marks, 0
        while rounds <= QUICK_DEPTH_ROUNDS:
            smaller = reduced.replace(b"{}", b"").replace(b"[]", b"")
            if len(smaller) == len(reduced):
                break
            reduced, rounds = smaller, rounds + 1
        closers = len(reduced) - len(reduced.lstrip(b"]}"))
        openers = len(reduced) - closers
        if rounds <= QUICK_DEPTH_ROUNDS and depth + openers + 2 * rounds <= limit:
            self.depth = depth - closers + openers
            return depth - closers
        heights: list[int] = list(map(operator.sub, accumulate(marks.translate(_STEPS)), count(1)))
        if depth + max(heights) > limit:
            raise FileRejected(
                ErrorCode.CORRUPT, f"the JSON nests deeper than the limit of {limit} levels (max_json_depth)"
            )
        self.depth = depth + heights[-1]
        return depth + min(0, min(heights))


def _too_long_string(limit: int) -> FileRejected:
    return FileRejected(ErrorCode.CORRUPT, f"a string is longer than the limit of {limit} bytes (max_string_bytes)")


class _Source:
    """A binary file read past its UTF-8 BOM (yajl rejects one), counting what ijson has pulled;
    with a guard, every chunk is checked before ijson sees it."""

    def __init__(self, path: Path, guard: _Guard | None = None) -> None:
        self._file = path.open("rb")
        self.start = len(UTF8_BOM) if self._file.read(len(UTF8_BOM)) == UTF8_BOM else 0
        self._file.seek(self.start)
        self.consumed = 0
        self.guard = guard

    def read(self, size: int = -1) -> bytes:
        data = self._file.read(size)
        self.consumed += len(data)
        if self.guard is not None:
            self.guard.feed(data)
        return data

    def __enter__(self) -> _Source:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._file.close()


# How the file is read:
# - The header (every top-level key but the contacts) comes from a Python loop over `ijson.parse`
#   events up to the contacts array. Keys match case-insensitively ignoring `_`, so this loop also
#   finds the contacts key's actual spelling.
# - The contacts go through `ijson.items(f, "<spelling>.item")`, whose item building runs in C (about
#   three times the speed of a Python loop over parse events).
#
# Keys after the contacts array are legal JSON and must be honoured, so `read_header` has to know
# whether anything follows the contacts array before any contact is used. A tail of `]` `}` is not
# proof (`"Contacts": [...], "Message_Template": "x", "Foo": [1]}` ends the same way), so the answer
# is made exact in two steps:
# - fast path (contacts is last, the usual file): the byte offset of the contacts `[` is found in the
#   header bytes, and a C-speed bracket scan (`_closes_at_end`: `translate` keeps quotes and
#   brackets, string contents are cut out, matched pairs are removed with `replace`) checks that
#   this `[` is closed by the `]` just before the final `}`. About 0.5 s per 125 MB here, against
#   2-3 s to iterate the contacts.
# - otherwise the same parse-event stream skips the contacts array in C (`operator.indexOf` on the
#   array's own `end_array` event, whose prefix nothing inside the array can have) and the Python
#   loop reads the keys that follow. Slower (the parse events are built), but only for such files,
#   and it also parses every byte, so a truncated file (never `]` `}` at its end) fails right here.
# The bracket scan trusts the JSON inside the array to be valid; where it is not, `iter_contacts`,
# which parses every byte, fails with File.Corrupt, so a wrong guess cannot outlive that verdict.
def read_header(path: Path, limits: Limits = DEFAULT_LIMITS) -> Header:
    """The file-level fields, validated, and the whole file checked against `limits` (those that
    iter_contacts cannot check as cheaply itself). Raises FileRejected: File.Corrupt (not UTF-8 /
    JSON / an object, over a limit), File.InvalidVersion, RequiredParameter.Missing (Contacts
    missing, not an array or empty), File.ParseError (a bad field, a key given twice)."""
    size = path.stat().st_size
    if size > limits.max_file_bytes:
        raise FileRejected(
            ErrorCode.CORRUPT,
            f"the file is {size} bytes, over the limit of {limits.max_file_bytes} bytes (max_file_bytes)",
        )
    with _Source(path, _Guard(limits)) as source:
        events = ijson.parse(source, use_float=False)
        try:
            first = next(events, None)
            if first is None or first[1] != "start_map":
                raise FileRejected(ErrorCode.CORRUPT, "the file must hold one JSON object")
            seen = _TopLevel(limits=limits)
            if _read_keys(events, seen, stop_at_contacts=True) and not _contacts_is_last(path, source, seen, limits):
                assert seen.contacts_key is not None
                operator.indexOf(events, (seen.contacts_key, "end_array", None))
                _read_keys(events, seen, stop_at_contacts=False)
        except (ijson.JSONError, UnicodeDecodeError) as error:
            raise _corrupt(error) from None
        except (ValueError, StopIteration):  # out of events; yajl normally says so first
            raise FileRejected(ErrorCode.CORRUPT, "the file is not valid JSON: it ends too early") from None
    return _build_header(seen)


def iter_contacts(path: Path, header: Header, *, start: int = 0, stop: int | None = None) -> Iterator[RawContact]:
    """Each contact in file order, indexed from 0. Raises FileRejected(File.Corrupt) where the JSON
    breaks or a contact has more keys than header.limits allow, File.ParseError past the limit on
    contacts; a truncated file yields its first contacts before that, so act only after the end.
    The file must be one read_header passed (it checked the limits that protect the parser).

    With `start`/`stop`, only the contacts with start <= index < stop are yielded (pass 1 split
    across processes). The JSON before `start` is still parsed, so a break there fails the same
    way; without `stop`, so is everything after."""
    limits = header.limits
    most = limits.max_contacts
    halt = stop if stop is not None and stop <= most else most  # one comparison per contact
    keys = limits.max_keys_per_object
    with _Source(path) as source:
        index = 0
        try:
            items = ijson.items(source, f"{header.contacts_key}.item", use_float=False)
            for _ in range(start):  # skipped, but parsed: its errors are errors of the range too
                if next(items, _END) is _END:
                    return
                index += 1
            for item in items:
                if index >= halt:
                    if halt == stop:
                        return
                    raise FileRejected(
                        ErrorCode.PARSE_ERROR,
                        f"the file has more contacts than the limit of {most} (max_contacts)",
                    )
                yield _contact(index, item, keys)
                index += 1
        except (ijson.JSONError, UnicodeDecodeError) as error:
            raise _corrupt(error) from None


def estimate_contacts(path: Path, header: Header, sample: int = 2000) -> int:
    """Roughly how many contacts the file holds, from the size of its first `sample` ones: to split
    pass 1 into parts of similar size (nothing depends on it being right). 0 when unsure."""
    size = path.stat().st_size
    with _Source(path) as source:
        count = 0
        try:
            for _ in ijson.items(source, f"{header.contacts_key}.item", use_float=False, buf_size=4096):
                count += 1
                if count == sample:
                    return int(size * count / source.consumed)
        except (ijson.JSONError, UnicodeDecodeError):
            return 0
    return count


def _read_keys(events: Iterator[tuple[str, str, Any]], seen: _TopLevel, *, stop_at_contacts: bool) -> bool:
    """Read top-level key/value pairs to the end of the object; True when stopped at a non-empty
    contacts array (the next event then belongs to its first item)."""
    for _, event, key in events:
        if event == "end_map":
            for _ in events:  # yajl reports trailing garbage only when asked for more
                raise FileRejected(ErrorCode.CORRUPT, "the file holds more than one JSON value")
            return False
        _, event, value = next(events)
        normal = normalise_key(key)
        if len(seen.values) == seen.limits.max_keys_per_object:
            raise _too_many_keys("the file's object", seen.limits.max_keys_per_object)
        if normal in seen.values:
            earlier = seen.values[normal][0]
            raise FileRejected(ErrorCode.PARSE_ERROR, f'key "{key}" is given twice (also as "{earlier}")')
        if event == "start_array" and normal == "contacts":
            seen.values[normal] = (key, _CONTAINER)
            seen.contacts_key = key
            _, event, _ = next(events)
            if event == "end_array":
                seen.contacts_empty = True
                continue
            if stop_at_contacts:
                return True
            operator.indexOf(events, (key, "end_array", None))
            continue
        if event in _STARTS:
            if event == "start_array" and seen.contacts_key is None:
                seen.arrays_before_contacts += 1
            _skip_value(events)
            value = _CONTAINER
        seen.values[normal] = (key, value)
    raise FileRejected(ErrorCode.CORRUPT, "the file is not valid JSON: it ends too early")


def _skip_value(events: Iterator[tuple[str, str, Any]]) -> None:
    # Depth, not prefixes: ijson's prefixes are ambiguous for keys that are empty or hold dots.
    depth = 1
    for _, event, _ in events:
        if event in _STARTS:
            depth += 1
        elif event in _ENDS:
            depth -= 1
            if depth == 0:
                return


def _contacts_is_last(path: Path, source: _Source, seen: _TopLevel, limits: Limits) -> bool:
    """Exactly whether the contacts array is the file's last value (see the comment above read_header)."""
    if source.consumed > MAX_HEADER_BYTES:
        return False
    with path.open("rb") as data:
        size = data.seek(0, 2)
        tail_start = max(source.start, size - TAIL_BYTES)
        data.seek(tail_start)
        tail = data.read().rstrip(JSON_WHITESPACE)
        if not tail.endswith(b"}"):
            return False
        tail = tail[:-1].rstrip(JSON_WHITESPACE)
        if not tail.endswith(b"]"):
            return False
        closing = tail_start + len(tail) - 1
        data.seek(source.start)
        opening = _nth_top_level_array(data.read(source.consumed), seen.arrays_before_contacts)
        if opening is None or source.start + opening >= closing:
            return False
        data.seek(source.start + opening + 1)
        return _closes_at_end(data, closing - (source.start + opening + 1), limits)


def _nth_top_level_array(header: bytes, n: int) -> int | None:
    """Offset of the (n+1)-th `[` directly inside the top-level object."""
    depth = 0
    for token in _TOKEN.finditer(header):
        mark = token.group()
        if mark[0] == ord('"'):
            continue
        if mark in (b"[", b"{"):
            if mark == b"[" and depth == 1:
                if n == 0:
                    return token.start()
                n -= 1
            depth += 1
        else:
            depth -= 1
    return None


def _closes_at_end(data: IO[bytes], length: int, limits: Limits) -> bool:
    """Whether `length` bytes from the current position keep the contacts array (just opened) open
    all through, to be closed by the byte after them, checking them against the limits on the way
    (_Guard; valid JSON assumed, see the comment above read_header). Raises FileRejected.

    Removing a matched pair of brackets never changes the lowest depth reached, so the array closes
    inside a chunk iff the guard's lowest depth there falls to the file's object (1)."""
    guard = _Guard(limits, depth=2)
    while length > 0:
        chunk = data.read(min(SCAN_CHUNK_BYTES, length))
        if not chunk:
            return False
        length -= len(chunk)
        if guard.feed(chunk) < 2:
            return False
    return guard.depth == 2 and not guard.in_string and not guard.carry


def _build_header(seen: _TopLevel) -> Header:
    values = {normal: value for normal, (_, value) in seen.values.items()}
    version = values.get("version")
    if version is None:
        raise FileRejected(ErrorCode.INVALID_VERSION, f"Version is missing; the current version is {SUPPORTED_VERSION}")
    try:
        number = coerce_int(version, "Version")
    except FileRejected:
        number = None
    if number != SUPPORTED_VERSION:
        raise FileRejected(
            ErrorCode.INVALID_VERSION,
            f"Version {describe(version)} is not supported; the current version is {SUPPORTED_VERSION}",
        )
    if seen.contacts_key is None:
        if "contacts" in values:
            raise FileRejected(ErrorCode.REQUIRED_PARAMETER_MISSING, "Contacts must be an array of contacts")
        raise FileRejected(ErrorCode.REQUIRED_PARAMETER_MISSING, "Contacts is missing")
    if seen.contacts_empty:
        raise FileRejected(ErrorCode.REQUIRED_PARAMETER_MISSING, "Contacts is empty")
    for normal, (spelling, value) in seen.values.items():
        if spelling.startswith(f"{seen.contacts_key}.") or (spelling == "" and value is _CONTAINER):
            # ijson would read this key's value as contacts ("Contacts.item" is an items prefix).
            raise FileRejected(ErrorCode.PARSE_ERROR, f'key "{spelling}" cannot be told apart from Contacts')
        if normal in FIELD_NAMES and normal != "contacts" and value is _CONTAINER:
            raise FileRejected(ErrorCode.PARSE_ERROR, f"{FIELD_NAMES[normal]} must be a single value, not {value!r}")

    def text(normal: str) -> str | None:
        value = values.get(normal)
        return None if value is None else coerce_str(value, FIELD_NAMES[normal])

    max_errors = None if values.get("maxerrors") is None else coerce_int(values["maxerrors"], "Max_Errors")
    if max_errors is not None and max_errors < 0:
        raise FileRejected(ErrorCode.PARSE_ERROR, f"Max_Errors must be 0 or more, got {max_errors}")
    check_optouts = values.get("checkoptouts")
    return Header(
        version=SUPPORTED_VERSION,
        email=text("email"),
        start=text("start"),
        end=text("end"),
        sender_id=text("senderid") or DEFAULT_SENDER_ID,
        check_optouts=True if check_optouts is None else coerce_bool(check_optouts, "Check_OptOuts"),
        message_template=text("messagetemplate"),
        max_errors=max_errors,
        warnings=tuple(
            f'unknown key "{spelling}" ignored' for normal, (spelling, _) in seen.values.items() if normal not in FIELD_NAMES
        ),
        contacts_key=seen.contacts_key,
        limits=seen.limits,
    )


def _too_many_keys(what: str, limit: int) -> FileRejected:
    return FileRejected(ErrorCode.CORRUPT, f"{what} has more keys than the limit of {limit} (max_keys_per_object)")


def _contact(index: int, item: object, keys: int = DEFAULT_LIMITS.max_keys_per_object) -> RawContact:
    if type(item) is dict:
        if len(item) > keys:
            raise _too_many_keys(f"contact {index}", keys)
        usual = _usual_contact(index, item, keys)
        if usual is not None:
            return usual
    return _checked_contact(index, item, keys)


# The contacts of a file nearly all spell the same keys in the same order: each spelling is folded
# once. Bounded, since a hostile file may invent new keys per contact (they then take the long way).
FOLDED_SPELLINGS = 256
_folded_spellings: dict[tuple[str, ...], tuple[str, ...] | None] = {}
_UNSEEN: Any = object()
T = TypeVar("T")


def _per_spelling(cache: dict[tuple[str, ...], Any], keys: tuple[str, ...], build: Callable[[tuple[str, ...]], T]) -> T:
    """`build(keys)`, kept in `cache` while it holds fewer than FOLDED_SPELLINGS spellings."""
    found = cache.get(keys, _UNSEEN)
    if found is _UNSEEN:
        found = build(keys)
        if len(cache) < FOLDED_SPELLINGS:
            cache[keys] = found
    return found  # type: ignore[no-any-return]


def _fold(keys: tuple[str, ...]) -> tuple[str, ...] | None:
    folded = tuple(normalise_key(key) for key in keys)
    return folded if len(set(folded)) == len(folded) else None


def _folded(keys: tuple[str, ...]) -> tuple[str, ...] | None:
    """The keys' normalised names, or None when two of them fold to the same name."""
    return _per_spelling(_folded_spellings, keys, _fold)


# Per spelling of a contact's keys: the keys that hold its msisdn, customer id, message and values
# (None where absent), or None when two keys fold to the same name. Per spelling of its values'
# keys: (key, name) of the value keys it uses, and whether those are all its keys, spelt as named.
_ContactLayout = tuple[str | None, str | None, str | None, str | None]
_contact_layouts: dict[tuple[str, ...], _ContactLayout | None] = {}
_value_layouts: dict[tuple[str, ...], tuple[tuple[tuple[str, str], ...], bool] | None] = {}


def _contact_layout(keys: tuple[str, ...]) -> _ContactLayout | None:
    names = _folded(keys)
    if names is None:
        return None
    spelt = dict(zip(names, keys, strict=True))
    return spelt.get("msisdn"), spelt.get("customerid"), spelt.get("message"), spelt.get("values")


def _value_layout(keys: tuple[str, ...]) -> tuple[tuple[tuple[str, str], ...], bool] | None:
    names = _folded(keys)
    if names is None:
        return None
    used = tuple((key, name) for key, name in zip(keys, names, strict=True) if name in CONTACT_VALUE_KEYS)
    return used, all(key == name for key, name in used) and len(used) == len(keys)


def _usual_contact(index: int, item: dict[str, Any], keys: int = DEFAULT_LIMITS.max_keys_per_object) -> RawContact | None:
    """The contact as _checked_contact reads it, for the usual one: no key given twice, text fields
    that are strings (or absent), values an object of strings. None: take the full checks.

    Each spelling of the keys is folded once (bounded caches); a contact is then read by key, and
    values spelt value1..value6, all strings, are kept as the very object ijson built."""
    layout = _per_spelling(_contact_layouts, tuple(item), _contact_layout)
    if layout is None:
        return None
    msisdn_key, customer_key, message_key, values_key = layout
    get = cast("dict[str | None, Any]", item).get  # an absent key is None, found nowhere: None
    msisdn, customer_id, message = get(msisdn_key), get(customer_key), get(message_key)
    if not (
        (msisdn is None or type(msisdn) is str)
        and (customer_id is None or type(customer_id) is str)
        and (message is None or type(message) is str)
    ):
        return None
    given = get(values_key)
    if given is None:
        return RawContact(index, msisdn, customer_id, {}, message)
    if type(given) is not dict or len(given) > keys:
        return None
    value_layout = _per_spelling(_value_layouts, tuple(given), _value_layout)
    if value_layout is None:
        return None
    used, as_named = value_layout
    if as_named:
        for value in given.values():
            if type(value) is not str:
                break
        else:
            return RawContact(index, msisdn, customer_id, given, message)
    values: dict[str, str] = {}
    for key, name in used:
        value = given[key]
        if value is not None:
            if type(value) is not str:
                return None
            values[name] = value
    return RawContact(index, msisdn, customer_id, values, message)


def _checked_contact(index: int, item: object, keys: int = DEFAULT_LIMITS.max_keys_per_object) -> RawContact:
    if not isinstance(item, dict):
        return RawContact(index, None, None, {}, None, f"contact is {describe(item)}, not an object")
    fields: dict[str, Any] = {}
    for key, value in item.items():
        normal = normalise_key(key)
        if normal in fields:
            return RawContact(index, None, None, {}, None, f'key "{key}" is given twice in this contact')
        fields[normal] = value
    given = fields.get("values")
    if isinstance(given, dict) and len(given) > keys:
        raise _too_many_keys(f"contact {index}'s values", keys)
    msisdn = customer_id = message = None
    values: dict[str, str] = {}
    try:
        # msisdn first, so a later problem is still reported against the number.
        msisdn = _optional_text(fields.get("msisdn"), "msisdn")
        customer_id = _optional_text(fields.get("customerid"), "customerId")
        message = _optional_text(fields.get("message"), "message")
        if given is not None and not isinstance(given, dict):
            raise FileRejected(ErrorCode.PARSE_ERROR, f"values must be an object, got {describe(given)}")
        if given:
            for key, value in given.items():
                normal = normalise_key(key)
                if normal in CONTACT_VALUE_KEYS and value is not None:
                    if normal in values:
                        raise FileRejected(ErrorCode.PARSE_ERROR, f'values: key "{key}" is given twice')
                    values[normal] = value if type(value) is str else coerce_str(value, f"values.{key}")
    except FileRejected as error:
        return RawContact(index, msisdn, customer_id, values, message, error.detail)
    return RawContact(index, msisdn, customer_id, values, message)


def _optional_text(value: object, name: str) -> str | None:
    if value is None or type(value) is str:  # the usual case, without a call
        return value
    return coerce_str(value, name)


def _corrupt(error: Exception) -> FileRejected:
    if isinstance(error, UnicodeDecodeError):
        return FileRejected(ErrorCode.CORRUPT, f"the file is not valid UTF-8 (byte {error.start})")
    message = error.args[0] if error.args else ""
    if isinstance(message, bytes):
        message = message.decode("utf-8", "replace")
    # yajl's first line names the fault ("lexical error: invalid bytes in UTF8 string."); the rest
    # echoes file content, which does not belong in a report.
    lines = str(message).strip().splitlines()
    reason = lines[0] if lines else "it ends too early"
    return FileRejected(ErrorCode.CORRUPT, f"the file is not valid JSON: {reason}")
