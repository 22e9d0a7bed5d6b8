"""Product error codes (PRODUCT.md §4) and the exceptions that carry them."""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    """Every code a user can see in a report, exactly as PRODUCT.md spells it."""

    INVALID_VERSION = "File.InvalidVersion"
    CORRUPT = "File.Corrupt"
    DUPLICATE_FOUND = "File.DuplicateFound"
    REQUIRED_PARAMETER_MISSING = "RequiredParameter.Missing"
    INCORRECT_SCHEDULED_DATE = "IncorrectScheduledDate"
    PARSE_ERROR = "File.ParseError"
    INSUFFICIENT_CREDITS = "InsufficientCredits"
    EMPTY_SEND = "EmptySend.NoValidMessages"
    INTERNAL_SERVER_ERROR = "InternalServerError"
    NO_NETWORK = "MSISDN.NoNetworkFound"
    OPTOUT = "MSISDN.Optout"


class SmsError(Exception):
    """Base of every error that carries a product code and a detail for the user."""

    def __init__(self, code: ErrorCode, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


class FileRejected(SmsError):
    """The file fails as a whole: it goes to Errors, nothing is sent, no credit is used."""


class ContactInvalid(SmsError):
    """One contact cannot be sent; the rest of the file goes on."""
