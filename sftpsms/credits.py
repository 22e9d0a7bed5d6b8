"""Credit rules shared by every place that spends or gives back credits: whether a balance covers
a cost (a file's, an automatic answer's), and the reasons a refund of expired parts carries."""

from __future__ import annotations

EXPIRED = "expired"  # a message still unsent at its file's End
CANCELLED = "cancelled"  # a message of a cancelled file


def shortfall(what: str, needed: int, balance: int) -> str | None:
    """Why `balance` cannot pay `needed` credits for `what` ("the file", "the answer"), in the
    words a report shows; None when it can."""
    if needed > balance:
        return f"{what} needs {needed} credits, the balance is {balance}"
    return None

