"""What the REST API and the control panel both do to an account, written once: revoke an API key,
add, rotate and remove a webhook. Each takes the account acting (already authenticated and, for
the panel, its CSRF token checked) and raises ApiError with the answer a refusal gets; the REST
route turns it into its JSON error, the panel into the page's error line."""

from __future__ import annotations

from functools import partial
from typing import Any
from urllib.parse import urlsplit

from actors.web.app import ApiError
from actors.web.context import WebContext
from eventstore.domain import DomainError
from eventstore.store import SmsStore, UnknownApiKey
from sftpsms.names import quoted
from sftpsms.webhooks import new_secret


async def revoke_key(context: WebContext, account: str, key_id: str) -> Any:
    """Revoke one of the account's keys (its channel closes with its last key) and forget it in this
    node's key cache; revoking a revoked key changes nothing. Returns the key as stored. 404 for a
    key that is not the account's, the same as for one that does not exist."""
    try:
        key = await context.store.run(partial(SmsStore.api_key, key_id=key_id))
    except (UnknownApiKey, DomainError):
        raise ApiError(404, f"no such key: {key_id}") from None
    if key.account != account:
        raise ApiError(404, f"no such key: {key_id}")
    if key.revoked_at is None:
        key = await context.store.run(partial(SmsStore.revoke_api_key, key_id=key_id, now=context.clock()))
        context.forget(key_id)
    return key


async def webhooks_of(context: WebContext, account: str) -> dict[str, Any]:
    """The account's webhooks: URL → {"events": [...], ...}."""
    return dict((await context.account(account)).webhooks)


async def add_webhook(context: WebContext, account: str, url: str, events: list[str]) -> str:
    """POST the account's `events` to an http(s) URL; returns the signing secret (shown once)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ApiError(400, f"{quoted(url)} is not an http:// or https:// URL")
    secret = new_secret()
    try:
        await context.store.run(partial(SmsStore.add_webhook, username=account, url=url, secret=secret, events=events))
    except DomainError as error:
        raise ApiError(400, str(error)) from None
    return secret


async def _known(context: WebContext, account: str, url: str) -> dict[str, Any]:
    hooks = await webhooks_of(context, account)
    if url not in hooks:
        raise ApiError(404, f"no such webhook: {url}")
    hook: dict[str, Any] = hooks[url]
    return hook


async def remove_webhook(context: WebContext, account: str, url: str) -> None:
    await _known(context, account, url)
    await context.store.run(partial(SmsStore.remove_webhook, username=account, url=url))


async def rotate_webhook(context: WebContext, account: str, url: str) -> tuple[list[str], str]:
    """A new signing secret for one of the account's webhooks: (its events, the secret)."""
    hook = await _known(context, account, url)
    secret = new_secret()
    await context.store.run(partial(SmsStore.rotate_webhook_secret, username=account, url=url, secret=secret))
    return list(hook["events"]), secret
