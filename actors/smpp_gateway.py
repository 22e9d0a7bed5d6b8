"""The SMPP v3.4 gateway: one bound transceiver session to an SMSC, kept up until cancelled.

PDUs are encoded and decoded by smpplib (`smpplib.smpp.make_pdu` / `parse_pdu`); the socket I/O is
ours, on trio, because smpplib's client blocks. Outbound, `submit` sends a message's parts one
after the other, each a submit_sm that waits for its submit_sm_resp (matched by sequence number);
the dispatcher runs `concurrency` sender tasks, so up to that many submit_sm are outstanding (the
window). Inbound, deliver_sm PDUs become GatewayReceipt (esm_class says "delivery receipt") or
GatewayReply (a mobile-originated message) on the reports channel, and are always answered. The
parts of a long reply (a user data header with an 8- or 16-bit reference, or sar_* TLVs) are held
until the last one comes — or `reply_parts_timeout` passes, then what arrived is the reply — and
become one GatewayReply whose id is a hash of its content, the same when the SMSC delivers it again.

Error handling: a throttled part (ESME_RTHROTTLED, ESME_RMSGQFUL) is retried after a backoff
before the next part is sent, so parts never go out of order; after `throttle_retries` the
message waits (GatewayUnavailable). Any other error status refuses the message (GatewayRejected).
A lost connection, an unanswered submit_sm or an unanswered enquire_link makes `submit` raise
GatewayUnavailable and `run` reconnect after a backoff that doubles up to a minute. A long
message interrupted after some parts keeps its reference and accepted parts; submitting it again
sends only the rest (an unanswered part may reach the handset twice: SMPP cannot tell).

Restarts: every accepted part is written to a journal in `journal_dir` (actors/submit_journal.py)
before `submit` goes on, so a message submitted again after a crash — its MessageSubmitted event
not yet written — returns the ids the SMSC gave it, or resumes from its next part, instead of
reaching the handset twice.
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import trio
from smpplib import consts, smpp

from actors.gateway import (
    GatewayReceipt,
    GatewayRejected,
    GatewayReply,
    GatewayReport,
    GatewayUnavailable,
    OutboundMessage,
)
from actors.submit_journal import SubmitJournal
from sftpsms.gatewayids import final_status
from sftpsms.gateways import SmppGatewayConfig
from sftpsms.gsm import DATA_CODING_UCS2, decode_gsm, encode_parts
from sftpsms.smppreceipt import ReceiptUnreadable, parse_receipt

log = logging.getLogger(__name__)

MAX_PDU = 64 * 1024  # octets; a longer command_length is a broken peer, not a message
READ_SIZE = 64 * 1024
MAX_BACKOFF = 60.0  # seconds between reconnects at most
UNBIND_WAIT = 1.0  # seconds to say unbind when the gateway stops
INTERFACE_VERSION = 0x34
RETRY_LATER = frozenset({consts.SMPP_ESME_RTHROTTLED, consts.SMPP_ESME_RMSGQFUL})
ESM_UDHI = 0x40  # esm_class bit: short_message starts with a user data header
ESM_TYPE_MASK = 0x3C  # esm_class message type bits
ESM_DELIVERY_RECEIPT = 0x04
RESPONSE_BIT = 0x80000000
HELD_REPLIES = 1_000  # long replies whose parts are still coming; beyond, the oldest is delivered as is


def utc_now() -> datetime:
    return datetime.now(UTC)


class _Sequence:
    """What smpplib asks for a new PDU's sequence number: 1..0x7FFFFFFF, then round again."""

    def __init__(self) -> None:
        self.sequence = 0

    def next_sequence(self) -> int:
        self.sequence = self.sequence % 0x7FFFFFFF + 1
        return self.sequence


class _NoSequence:
    """smpplib's parse needs a client; the parsed header sets the real sequence number."""

    sequence = 0

    def next_sequence(self) -> int:
        return 0


_PARSING = _NoSequence()


class _BindRefused(Exception):
    pass


@dataclass
class _Waiter:
    done: trio.Event = field(default_factory=trio.Event)
    response: Any = None  # the response PDU; None when the connection went away first


@dataclass
class _Connection:
    """One TCP connection and bound session: its stream, its send lock, its outstanding requests."""

    stream: trio.SocketStream
    opened: datetime
    buffer: bytearray = field(default_factory=bytearray)
    send_lock: trio.Lock = field(default_factory=trio.Lock)
    pending: dict[int, _Waiter] = field(default_factory=dict)
    closed: bool = False
    ended: bool = False  # the SMSC closed the connection or unbound: nothing more to say to it

    async def send(self, data: bytes) -> None:
        async with self.send_lock:
            try:
                await self.stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as error:
                self.closed = True
                raise GatewayUnavailable(f"connection lost: {error}") from None

    async def receive_pdu(self) -> bytes | None:
        """The next whole PDU's octets, or None when the peer closed the connection."""
        while True:
            if len(self.buffer) >= 4:
                length = int.from_bytes(self.buffer[:4], "big")
                if length < 16 or length > MAX_PDU:
                    raise trio.BrokenResourceError(f"PDU of {length} octets: the stream is broken")
                if len(self.buffer) >= length:
                    data = bytes(self.buffer[:length])
                    del self.buffer[:length]
                    return data
            chunk = await self.stream.receive_some(READ_SIZE)
            if not chunk:
                return None
            self.buffer += chunk

    def fail_pending(self) -> None:
        self.closed = True
        for waiter in self.pending.values():
            waiter.done.set()
        self.pending.clear()


class SmppGateway:
    """A gateway to one SMSC over SMPP v3.4 (bind_transceiver)."""

    def __init__(
        self,
        config: SmppGatewayConfig,
        reports: trio.MemorySendChannel[GatewayReport],
        *,
        journal_dir: Path,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.config = config
        self.name = config.name
        self.concurrency = max(1, config.window)
        self._reports = reports
        self._clock = clock
        self._sequence = _Sequence()
        self._connection: _Connection | None = None
        # What the SMSC accepted, message by message, across restarts: a re-submission of a done
        # message returns its ids; one whose later parts failed (connection lost, throttled too
        # long) sends only the rest, with the same reference.
        self.journal = SubmitJournal(journal_dir, now=clock())
        self._reference = self.journal.reference
        # Parts of long replies (mobile-originated), by (source, destination, reference, total), until
        # the last part comes or `reply_parts_timeout` passes; kept across reconnects.
        self._reply_parts: OrderedDict[tuple[str, str, int, int], _HeldReply] = OrderedDict()
        self._reply_parts_arrived = trio.Event()
        self.connects = 0  # successful binds, for operators and tests
        self.throttled = 0  # throttled submit_sm answers, retried

    # --- outbound ----------------------------------------------------------------------------

    async def submit(self, message: OutboundMessage) -> tuple[str, ...]:
        progress = self.journal.get(message.message_id)
        if progress is not None and progress.done:
            return progress.ids
        if progress is not None:
            reference, ids = progress.reference, list(progress.ids)
        else:
            self._reference = (self._reference + 1) % 256
            reference, ids = self._reference, []
        try:
            coding, payloads = encode_parts(message.text, reference)
        except ValueError as error:
            raise GatewayRejected(self.name, str(error)) from None
        if len(ids) >= len(payloads):  # the text was split differently before: start again
            ids = []
        numeric = message.sender_id.isdigit()
        fields = {
            "service_type": "",
            "source_addr_ton": 1 if numeric else self.config.source_addr_ton,
            "source_addr_npi": 1 if numeric else self.config.source_addr_npi,
            "source_addr": message.sender_id,
            "dest_addr_ton": self.config.dest_addr_ton,
            "dest_addr_npi": self.config.dest_addr_npi,
            "destination_addr": message.msisdn,
            "esm_class": ESM_UDHI if len(payloads) > 1 else 0,
            "protocol_id": 0,
            "priority_flag": 0,
            "registered_delivery": 1,
            "replace_if_present_flag": 0,
            "data_coding": coding,
            "sm_default_msg_id": 0,
        }
        for payload in payloads[len(ids) :]:  # in order: part n+1 only after part n was accepted
            ids.append(await self._submit_part(fields, payload))
            try:
                self.journal.record(message.message_id, reference, len(payloads), tuple(ids), self._clock())
            except OSError as error:  # the SMSC has the part: go on; only a restart could resend it now
                log.error("gateway=%s code=SMPP_JOURNAL message=%s detail=%s", self.name, message.message_id, error)
        return tuple(ids)

    async def _submit_part(self, fields: dict[str, Any], payload: bytes) -> str:
        backoff = self.config.throttle_backoff
        for attempt in range(self.config.throttle_retries + 1):
            response = await self._request("submit_sm", short_message=payload, **fields)
            status = response.status
            if status == consts.SMPP_ESME_ROK:
                message_id = response.message_id
                return message_id.decode("ascii", "replace") if isinstance(message_id, bytes) else str(message_id)
            if status in RETRY_LATER:
                self.throttled += 1
                if attempt < self.config.throttle_retries:
                    await trio.sleep(backoff)
                    backoff *= 2
                continue
            raise GatewayRejected(self.name, f"SMPP status {status:#04x} ({response.get_status_desc()})")
        raise GatewayUnavailable(f"{self.name}: still throttled after {self.config.throttle_retries} retries")

    async def _request(self, command: str, **params: Any) -> Any:
        """Send a request PDU and wait for its response (by sequence number)."""
        connection = self._connection
        if connection is None or connection.closed:
            raise GatewayUnavailable(f"{self.name}: not connected")
        pdu = smpp.make_pdu(command, client=self._sequence, **params)
        waiter = _Waiter()
        connection.pending[pdu.sequence] = waiter
        try:
            await connection.send(pdu.generate())
            with trio.fail_after(self.config.response_timeout):
                await waiter.done.wait()
        except trio.TooSlowError:
            raise GatewayUnavailable(f"{self.name}: no answer to {command} in {self.config.response_timeout}s") from None
        finally:
            connection.pending.pop(pdu.sequence, None)
        if waiter.response is None:
            raise GatewayUnavailable(f"{self.name}: connection lost before the answer to {command}")
        return waiter.response

    # --- the session -------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect, bind, serve the session; reconnect when it ends. Calls task_status.started()
        after the first attempt to connect, whether it succeeded or not (the dispatcher treats
        the gateway as unavailable until it is bound).

        Resource handling: each connection is closed when its session ends; outstanding requests
        fail with GatewayUnavailable then. The reports channel and the journal are closed when run
        ends; parts of a long reply still held then are lost (the SMSC had its answers).
        """
        with self._reports:
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._expire_reply_parts)
                    await self._keep_connected(task_status)
            finally:
                self.journal.close()

    async def _keep_connected(self, task_status: trio.TaskStatus[None]) -> None:
        started = False
        backoff = self.config.reconnect_backoff
        while True:
            try:
                connection = await self._connect()
            except (OSError, trio.BrokenResourceError, trio.TooSlowError, GatewayUnavailable, _BindRefused) as error:
                log.warning("gateway=%s code=SMPP_CONNECT detail=%s retry_in=%.1fs", self.name, error, backoff)
            else:
                backoff = self.config.reconnect_backoff
                self._connection = connection
                self.connects += 1
                if not started:
                    task_status.started()
                    started = True
                try:
                    await self._serve(connection)
                finally:
                    self._connection = None
                    connection.fail_pending()
                    with trio.CancelScope(shield=True, deadline=trio.current_time() + UNBIND_WAIT):
                        if not connection.ended:  # we are leaving (cancelled, or no enquire_link answer)
                            await self._unbind(connection)
                        await connection.stream.aclose()
                log.warning("gateway=%s code=SMPP_DISCONNECTED retry_in=%.1fs", self.name, backoff)
            if not started:
                task_status.started()
                started = True
            await trio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)

    async def _connect(self) -> _Connection:
        """A TCP connection with a bound transceiver session on it."""
        config = self.config
        with trio.fail_after(config.response_timeout):
            stream = await trio.open_tcp_stream(config.host, config.port)
            connection = _Connection(stream=stream, opened=self._clock())
            try:
                bind = smpp.make_pdu(
                    "bind_transceiver",
                    client=self._sequence,
                    system_id=config.system_id,
                    password=config.password,
                    system_type=config.system_type,
                    interface_version=INTERFACE_VERSION,
                    addr_ton=0,
                    addr_npi=0,
                    address_range="",
                )
                await connection.send(bind.generate())
                data = await connection.receive_pdu()
                if data is None:
                    raise _BindRefused("the SMSC closed the connection instead of answering the bind")
                try:
                    response = smpp.parse_pdu(data, client=_PARSING)
                except Exception as error:  # smpplib raises several kinds for a malformed PDU
                    raise _BindRefused(f"unreadable answer to bind_transceiver: {error}") from None
                if response.command != "bind_transceiver_resp" or response.sequence != bind.sequence:
                    raise _BindRefused(f"unexpected {response.command} in answer to bind_transceiver")
                if response.status != consts.SMPP_ESME_ROK:
                    raise _BindRefused(f"bind refused: {response.status:#04x} ({response.get_status_desc()})")
            except BaseException:
                with trio.CancelScope(shield=True):
                    await stream.aclose()
                raise
        log.info("gateway=%s code=SMPP_BOUND host=%s port=%d", self.name, config.host, config.port)
        return connection

    async def _serve(self, connection: _Connection) -> None:
        """Read PDUs until the connection ends; send enquire_link meanwhile."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._keep_alive, connection, nursery.cancel_scope)
            try:
                await self._read(connection)
            except (trio.BrokenResourceError, trio.ClosedResourceError, GatewayUnavailable) as error:
                log.warning("gateway=%s code=SMPP_READ detail=%s", self.name, error)
            nursery.cancel_scope.cancel()

    async def _keep_alive(self, connection: _Connection, session: trio.CancelScope) -> None:
        """An enquire_link every `enquire_link` seconds; no answer ends the session."""
        while True:
            await trio.sleep(self.config.enquire_link)
            try:
                await self._request("enquire_link")
            except GatewayUnavailable as error:
                log.warning("gateway=%s code=SMPP_ENQUIRE_LINK detail=%s", self.name, error)
                session.cancel()
                return

    async def _read(self, connection: _Connection) -> None:
        while True:
            data = await connection.receive_pdu()
            if data is None:
                connection.ended = True
                return
            command_id = int.from_bytes(data[4:8], "big")
            sequence = int.from_bytes(data[12:16], "big")
            try:
                pdu = smpp.parse_pdu(data, client=_PARSING)
            except Exception as error:  # an unknown command or a malformed body: the peer's bug
                log.warning("gateway=%s code=SMPP_BAD_PDU command=%#x detail=%s", self.name, command_id, error)
                if not command_id & RESPONSE_BIT:
                    await self._respond(connection, "generic_nack", sequence, consts.SMPP_ESME_RINVCMDID)
                continue
            if command_id & RESPONSE_BIT:
                waiter = connection.pending.get(sequence)
                if waiter is not None:
                    waiter.response = pdu
                    waiter.done.set()
            elif pdu.command == "deliver_sm":
                report = self._report(pdu)
                if report is not None:
                    await self._reports.send(report)
                while len(self._reply_parts) > HELD_REPLIES:  # parts of too many long replies: the oldest goes
                    key, held = next(iter(self._reply_parts.items()))
                    await self._deliver_incomplete(key, held)
                await self._respond(connection, "deliver_sm_resp", sequence)
            elif pdu.command == "enquire_link":
                await self._respond(connection, "enquire_link_resp", sequence)
            elif pdu.command == "unbind":
                await self._respond(connection, "unbind_resp", sequence)
                connection.ended = True
                return
            else:
                await self._respond(connection, "generic_nack", sequence, consts.SMPP_ESME_RINVCMDID)

    async def _unbind(self, connection: _Connection) -> None:
        """Say unbind on the way out (best effort: the connection closes right after)."""
        try:
            await connection.send(smpp.make_pdu("unbind", client=self._sequence).generate())
        except GatewayUnavailable:
            pass

    async def _respond(self, connection: _Connection, command: str, sequence: int, status: int = 0) -> None:
        pdu = smpp.make_pdu(command, client=_PARSING, status=status)
        pdu.sequence = sequence
        await connection.send(pdu.generate())

    # --- inbound -----------------------------------------------------------------------------

    def _report(self, pdu: Any) -> GatewayReport | None:
        """A receipt or a reply out of a deliver_sm; None for a part of a long reply held until its
        other parts come, and (logged) for what is neither."""
        esm_class = pdu.esm_class or 0
        payload: bytes = pdu.short_message or getattr(pdu, "message_payload", None) or b""
        if esm_class & ESM_TYPE_MASK == ESM_DELIVERY_RECEIPT:
            text = payload.decode("latin-1")
            try:
                receipt = parse_receipt(text)
                status = final_status(receipt.stat)
            except (ReceiptUnreadable, ValueError) as error:
                log.warning("gateway=%s code=SMPP_RECEIPT_UNREADABLE detail=%s", self.name, error)
                return None
            if status is None:
                return None  # on its way still (ENROUTE, ACCEPTD): nothing to record
            receipted = _text(getattr(pdu, "receipted_message_id", None))
            return GatewayReceipt(
                gateway=self.name,
                gateway_id=receipted or receipt.message_id,
                status=status,
                at=receipt.done or self._clock(),
                error=receipt.error,
            )
        if esm_class & ESM_TYPE_MASK:
            log.info("gateway=%s code=SMPP_DELIVER_IGNORED esm_class=%#x", self.name, esm_class)
            return None
        part = _MoPart.of(pdu, payload)
        if part.total <= 1:
            return self._reply(part, [part])
        key = (part.source, part.destination, part.reference, part.total)
        held = self._reply_parts.get(key)
        if held is None:
            held = self._reply_parts[key] = _HeldReply(deadline=trio.current_time() + self.config.reply_parts_timeout)
            self._reply_parts_arrived.set()
        held.parts.setdefault(part.sequence, part)  # a part delivered twice counts once
        if len(held.parts) < part.total:
            return None
        del self._reply_parts[key]
        return self._reply(part, [held.parts[number] for number in sorted(held.parts)])

    def _reply(self, last: _MoPart, parts: list[_MoPart]) -> GatewayReply:
        """The reply of one or more parts (all, in order, or what arrived before the timeout).

        SMPP v3.4 gives a mobile-originated message no id, and an SMSC redelivers one whose
        deliver_sm_resp it did not get (a reconnect): its id is a hash of what stays the same then —
        the addresses, the text, the SMSC's time fields when it fills them, the concatenation
        reference — so a redelivered reply is recorded once. (The same text sent twice by one
        number in reply to one message, by an SMSC that fills no time field, is recorded once too.)
        """
        first = parts[0]
        coding = first.coding
        data = b"".join(part.data for part in parts)
        if coding == DATA_CODING_UCS2:
            text = data.decode("utf-16-be", "replace")
        elif coding in (0, 1):
            text = decode_gsm(data)
        else:
            text = data.decode("latin-1")
        stable = [
            last.source,
            last.destination,
            text,
            first.scheduled,
            first.validity,
            f"{first.reference}/{first.total}" if first.total > 1 else "",
        ]
        digest = hashlib.sha256("\x1f".join(stable).encode()).hexdigest()[:32]
        return GatewayReply(
            gateway=self.name,
            reply_id=f"mo-{digest}",
            msisdn=last.source.lstrip("+"),
            to=last.destination,
            text=text,
            at=self._clock(),
        )

    async def _expire_reply_parts(self) -> None:
        """A long reply whose parts stop coming is delivered as what arrived, after
        `reply_parts_timeout` seconds from its first part (in order of first parts: the oldest
        is always the first to expire)."""
        while True:
            if not self._reply_parts:
                await self._reply_parts_arrived.wait()
                self._reply_parts_arrived = trio.Event()
                continue
            key, held = next(iter(self._reply_parts.items()))
            if held.deadline > trio.current_time():
                await trio.sleep_until(held.deadline)
                continue
            await self._deliver_incomplete(key, held)

    async def _deliver_incomplete(self, key: tuple[str, str, int, int], held: _HeldReply) -> None:
        del self._reply_parts[key]
        parts = [held.parts[number] for number in sorted(held.parts)]
        log.warning(
            "gateway=%s code=SMPP_REPLY_INCOMPLETE msisdn=%s parts=%d of=%d",
            self.name,
            key[0],
            len(parts),
            key[3],
        )
        await self._reports.send(self._reply(parts[-1], parts))


@dataclass(frozen=True)
class _MoPart:
    """One deliver_sm of a mobile-originated message, with its concatenation header read."""

    source: str
    destination: str
    coding: int
    data: bytes  # the text's octets, without the user data header
    reference: int = 0
    total: int = 1
    sequence: int = 1
    scheduled: str = ""
    validity: str = ""

    @classmethod
    def of(cls, pdu: Any, payload: bytes) -> _MoPart:
        reference, total, sequence = 0, 1, 1
        data = payload
        if (pdu.esm_class or 0) & ESM_UDHI and payload:
            header, data = payload[1 : payload[0] + 1], payload[payload[0] + 1 :]
            reference, total, sequence = _concatenation(header)
        elif getattr(pdu, "sar_total_segments", None):
            reference = pdu.sar_msg_ref_num or 0
            total = pdu.sar_total_segments
            sequence = pdu.sar_segment_seqnum or 1
        if not 1 <= sequence <= total:
            reference, total, sequence = 0, 1, 1  # nonsense numbering: a message of its own
        return cls(
            source=_text(pdu.source_addr),
            destination=_text(pdu.destination_addr),
            coding=(pdu.data_coding or 0) & 0x0F,
            data=data,
            reference=reference,
            total=total,
            sequence=sequence,
            scheduled=_text(getattr(pdu, "schedule_delivery_time", None)),
            validity=_text(getattr(pdu, "validity_period", None)),
        )


@dataclass
class _HeldReply:
    """The parts of a long reply that arrived so far, by sequence number."""

    deadline: float  # trio time: deliver what arrived then
    parts: dict[int, _MoPart] = field(default_factory=dict)


def _concatenation(header: bytes) -> tuple[int, int, int]:
    """(reference, total, sequence) from a user data header's concatenation element (IEI 0: 8-bit
    reference, IEI 8: 16-bit); (0, 1, 1) when it has none."""
    position = 0
    while position + 2 <= len(header):
        element, length = header[position], header[position + 1]
        value = header[position + 2 : position + 2 + length]
        if element == 0x00 and length == 3 and len(value) == 3:
            return value[0], value[1], value[2]
        if element == 0x08 and length == 4 and len(value) == 4:
            return value[0] << 8 | value[1], value[2], value[3]
        position += 2 + length
    return 0, 1, 1


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("ascii", "replace")
    return value
