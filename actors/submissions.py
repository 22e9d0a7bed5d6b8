"""Which message a gateway id belongs to: recent submissions in memory, older ones in the read model.

The dispatcher adds every submission the moment the gateway accepted it — before its
MessageSubmitted event is even written — so a receipt that overtakes the event still matches. The
read model (`gateway_ids`, `last_sent`, projected from MessageSubmitted) answers for anything older
than the in-memory window, e.g. receipts that arrive after a restart.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from uuid import UUID

from actors.gateway import OutboundMessage
from sftpsms.gatewayids import lookup_keys, stored_key

CAPACITY = 100_000  # submissions remembered in memory (~ minutes of sending at full rate)


@dataclass(frozen=True, slots=True)
class SubmissionRef:
    """Everything a receipt or reply needs to be recorded against its message."""

    message_id: UUID
    batch_id: UUID
    file_id: UUID
    index: int
    account: str
    msisdn: str
    customer_id: str | None
    gateway: str
    gateway_id: str

    @classmethod
    def of(cls, message: OutboundMessage, gateway: str, gateway_id: str) -> SubmissionRef:
        return cls(
            message_id=message.message_id,
            batch_id=message.batch_id,
            file_id=message.file_id,
            index=message.index,
            account=message.account,
            msisdn=message.msisdn,
            customer_id=message.customer_id,
            gateway=gateway,
            gateway_id=gateway_id,
        )

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> SubmissionRef:
        return cls(
            message_id=UUID(row["message_id"]),
            batch_id=UUID(row["batch_id"]),
            file_id=UUID(row["file_id"]),
            index=int(row["idx"]),
            account=row["account"],
            msisdn=row["msisdn"],
            customer_id=row["customer_id"],
            gateway=row["gateway"],
            gateway_id=row["gateway_id"],
        )


# A SubmissionRef as a tuple of ints and strings: the garbage collector stops visiting such a tuple
# after its first look, where a dataclass holding UUIDs is visited in every full collection (a
# hundred thousand of them made pauses of a quarter second at full rate).
_Packed = tuple[int, int, int, int, str, str, "str | None", str, str]


def _pack(ref: SubmissionRef) -> _Packed:
    return (
        ref.message_id.int, ref.batch_id.int, ref.file_id.int, ref.index, ref.account, ref.msisdn,
        ref.customer_id, ref.gateway, ref.gateway_id,
    )


@lru_cache(maxsize=4096)
def _uuid(value: int) -> UUID:
    """Batch and file ids repeat (a thousand messages a batch): made into UUIDs once each."""
    return UUID(int=value)


def _unpack(packed: _Packed) -> SubmissionRef:
    message, batch, file, index, account, msisdn, customer_id, gateway, gateway_id = packed
    return SubmissionRef(UUID(int=message), _uuid(batch), _uuid(file), index, account, msisdn, customer_id,
                         gateway, gateway_id)


class RecentSubmissions:
    """A bounded map from gateway-id keys (and recipients) to submissions; oldest forgotten first."""

    def __init__(self, capacity: int = CAPACITY) -> None:
        self.capacity = capacity
        self._by_key: OrderedDict[str, _Packed] = OrderedDict()
        self._by_msisdn: OrderedDict[str, _Packed] = OrderedDict()

    def __len__(self) -> int:
        return len(self._by_msisdn)

    def add(self, ref: SubmissionRef, gateway_ids: tuple[str, ...]) -> None:
        packed = _pack(ref)
        for gateway_id in gateway_ids:
            self._by_key[f"{ref.gateway}:{stored_key(gateway_id)}"] = packed
        self._by_msisdn[ref.msisdn] = packed
        self._by_msisdn.move_to_end(ref.msisdn)
        while len(self._by_key) > self.capacity * 2:
            self._by_key.popitem(last=False)
        while len(self._by_msisdn) > self.capacity:
            self._by_msisdn.popitem(last=False)

    def find(self, gateway: str, gateway_id: str) -> SubmissionRef | None:
        """The submission a gateway id names, in any spelling; the exact spelling wins."""
        packed = self._by_key.get(f"{gateway}:{stored_key(gateway_id)}")  # the usual case, cheaply
        if packed is not None:
            return _unpack(packed)
        for key in lookup_keys(gateway_id)[1:]:
            packed = self._by_key.get(f"{gateway}:{key}")
            if packed is not None:
                return _unpack(packed)
        return None

    def last_to(self, msisdn: str) -> SubmissionRef | None:
        packed = self._by_msisdn.get(msisdn)
        return None if packed is None else _unpack(packed)
