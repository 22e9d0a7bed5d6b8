"""Which doors (channels) an account may use (PRODUCT.md §1)."""

from __future__ import annotations

from datetime import UTC, datetime

CHANNELS = ("sftp", "ftp", "rest")
# Accounts created before this day have every channel active without keys (the legacy rule).
LEGACY_CUTOFF = datetime(2023, 6, 6, tzinfo=UTC)


def is_legacy(created_at: datetime) -> bool:
    return created_at < LEGACY_CUTOFF


def channel_active(created_at: datetime, channel: str, channels_with_keys: frozenset[str]) -> bool:
    return is_legacy(created_at) or channel in channels_with_keys


def refusal_message(username: str, channel: str) -> str:
    return (
        f"The {channel} channel is not enabled for account {username!r}. "
        f"Channels become active when an API key is created for them: "
        f"sftpsms apikey create {username} --channel {channel}"
    )
