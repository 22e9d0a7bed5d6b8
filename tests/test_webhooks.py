"""The webhook sender against a real HTTP receiver: signatures verify with the standardwebhooks
library, retries, giving up, order per message, replays byte-identical, restarts without loss."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
import trio
from standardwebhooks.webhooks import Webhook

from actors.file import utc_now
from actors.webhooks import WebhookSender
from actors.writer import StoreClient, open_store_channel, run_writer
from eventstore.domain import DeliveryLog, WebhookLog, message_id, webhook_log_id
from eventstore.store import SmsStore
from sftpsms import cli
from sftpsms.config import Settings
from sftpsms.passwords import hash_password
from sftpsms.webhooks import new_secret
from tests.receiver import Receiver, running_receiver

ACCOUNT = "acme"
WAIT = 20.0  # seconds any one expected outcome may take


def fast_settings(data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "webhook_backoff": 0.05,
        "webhook_backoff_max": 0.2,
        "webhook_retry_for": 5.0,
        "webhook_timeout": 5.0,
    }
    values.update(overrides)
    return Settings(data_dir=data_dir, **values)


def create_account(store: SmsStore, username: str = ACCOUNT) -> None:
    store.create_account(
        username=username, password_hash=hash_password("pw"), email=None, country="ZA", created_at=datetime.now(UTC)
    )


def add_webhook(store: SmsStore, url: str, events: tuple[str, ...] = ("delivery", "reply")) -> str:
    secret = new_secret()
    store.add_webhook(ACCOUNT, url, secret, list(events))
    return secret


@dataclass
class Source:
    """Writes DeliveryReported / ReplyReceived events of one batch, as the receipts actor does."""

    store: StoreClient
    file: UUID
    log: DeliveryLog

    @classmethod
    def new(cls, store: StoreClient) -> Source:
        file = uuid4()
        return cls(store, file, DeliveryLog.start(batch=uuid4(), file=file, account=ACCOUNT))

    async def deliver(self, *indexes: int, status: str = "delivered") -> None:
        for index in indexes:
            self.log.reported(
                index,
                message_id=message_id(self.file, index),
                msisdn=f"2783{index:07d}",
                customer_id=f"c{index}",
                status=status,
                gateway="simulator",
                gateway_id=f"g{index}",
                error=None,
                at=utc_now().isoformat(),
            )
        await self.store.run(lambda s: s.save(self.log))

    async def reply(self, index: int, text: str) -> None:
        self.log.replied(
            index,
            message_id=message_id(self.file, index),
            msisdn=f"2783{index:07d}",
            customer_id=f"c{index}",
            text=text,
            gateway="simulator",
            reply_id=f"r{index}-{text}",
            opt_out=False,
            at=utc_now().isoformat(),
        )
        await self.store.run(lambda s: s.save(self.log))


@asynccontextmanager
async def running_sender(store: SmsStore, settings: Settings) -> AsyncIterator[StoreClient]:
    """The writer and the webhook sender, wired as the supervisor wires them."""
    async with trio.open_nursery() as nursery:
        client, inbox = open_store_channel()
        sender = WebhookSender(settings=settings, store=store, writer=client.clone(), clock=utc_now)
        await nursery.start(partial(run_writer, inbox, store=store, on_written=sender.poke))
        await nursery.start(sender.run)
        yield client
        nursery.cancel_scope.cancel()


async def posts(receiver: Receiver, count: int, *, status: int | None = 200) -> list[Any]:
    """Wait (in a thread, on the receiver's condition) until `count` POSTs answered `status` arrived."""
    return await trio.to_thread.run_sync(partial(receiver.wait, count, status=status, timeout=WAIT), abandon_on_cancel=True)


async def settled(store: SmsStore, url: str, count: int) -> list[Any]:
    """Wait until the webhook's log holds `count` WebhookDelivered/WebhookFailed events."""
    kinds = (WebhookLog.WebhookDelivered, WebhookLog.WebhookFailed)
    with trio.fail_after(WAIT):
        while True:
            if store.exists(webhook_log_id(ACCOUNT, url)):
                events = [e for e in store.events.get(webhook_log_id(ACCOUNT, url)) if isinstance(e, kinds)]
                if len(events) >= count:
                    return events
            await trio.sleep(0.02)


def failing_first(times: int, status: int = 500) -> Callable[[dict[str, str], bytes], int]:
    """An answer that fails each webhook id `times` times, then accepts it."""
    seen: dict[str, int] = {}

    def answer(headers: dict[str, str], body: bytes) -> int:
        count = seen[headers["webhook-id"]] = seen.get(headers["webhook-id"], 0) + 1
        return status if count <= times else 200

    return answer


# ---- delivery ---------------------------------------------------------------------------------


async def test_delivery_event_is_posted_with_a_signature_the_library_verifies(store: SmsStore, tmp_path: Path) -> None:
    create_account(store)
    with running_receiver() as receiver:
        secret = add_webhook(store, receiver.url)
        async with running_sender(store, fast_settings(tmp_path)) as client:
            source = Source.new(client)
            await source.deliver(0)
            [post] = await posts(receiver, 1)
            [recorded] = await settled(store, receiver.url, 1)
    payload = Webhook(secret).verify(post.body, post.headers)
    assert payload["type"] == "delivery"
    data = payload["data"]
    assert data["message_id"] == str(message_id(source.file, 0))
    assert data["account"] == ACCOUNT and data["file_id"] == str(source.file)
    assert data["msisdn"] == "27830000000" and data["customer_id"] == "c0"
    assert data["status"] == "delivered" and data["gateway"] == "simulator" and data["error"] is None
    assert post.headers["content-type"] == "application/json"
    assert post.id.startswith("msg_")
    assert isinstance(recorded, WebhookLog.WebhookDelivered)
    assert recorded.webhook_id == post.id and recorded.attempts == 1 and recorded.status_code == 200


async def test_a_wrong_secret_does_not_verify(store: SmsStore, tmp_path: Path) -> None:
    from standardwebhooks.webhooks import WebhookVerificationError

    create_account(store)
    with running_receiver() as receiver:
        add_webhook(store, receiver.url)
        async with running_sender(store, fast_settings(tmp_path)) as client:
            await Source.new(client).deliver(0)
            [post] = await posts(receiver, 1)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(post.body, post.headers)


async def test_only_subscribed_kinds_are_posted(store: SmsStore, tmp_path: Path) -> None:
    create_account(store)
    with running_receiver() as replies, running_receiver() as deliveries:
        add_webhook(store, replies.url, ("reply",))
        add_webhook(store, deliveries.url, ("delivery",))
        async with running_sender(store, fast_settings(tmp_path)) as client:
            source = Source.new(client)
            await source.deliver(0)
            await source.reply(0, "thanks")
            await settled(store, replies.url, 1)
            await settled(store, deliveries.url, 1)
    assert [p.json()["type"] for p in replies.posts()] == ["reply"]
    assert [p.json()["type"] for p in deliveries.posts()] == ["delivery"]
    assert replies.posts()[0].json()["data"]["text"] == "thanks"


async def test_only_events_after_the_subscription_are_posted(store: SmsStore, tmp_path: Path) -> None:
    # With no webhook anywhere the sender skips ahead without reading the deliveries; the first
    # subscription puts it back to reading everything from there on.
    create_account(store)
    with running_receiver() as receiver:
        async with running_sender(store, fast_settings(tmp_path)) as client:
            source = Source.new(client)
            await source.deliver(0)
            await source.deliver(1)
            await trio.sleep(0.5)  # the sender has read past them
            add_webhook(store, receiver.url)
            await source.deliver(2)
            [post] = await posts(receiver, 1)
            await trio.sleep(0.5)  # nothing else comes
    assert post.json()["data"]["message_id"] == str(message_id(source.file, 2))
    assert len(receiver.posts()) == 1


async def test_receiver_failing_three_times_gets_the_event_once_as_a_success_after_four_attempts(
    store: SmsStore, tmp_path: Path
) -> None:
    create_account(store)
    with running_receiver(failing_first(3)) as receiver:
        add_webhook(store, receiver.url)
        async with running_sender(store, fast_settings(tmp_path)) as client:
            await Source.new(client).deliver(0)
            [recorded] = await settled(store, receiver.url, 1)
    attempts = receiver.posts(None)
    assert [p.status for p in attempts] == [500, 500, 500, 200]
    assert len({p.id for p in attempts}) == 1 and len({p.body for p in attempts}) == 1
    assert isinstance(recorded, WebhookLog.WebhookDelivered) and recorded.attempts == 4


async def test_gives_up_after_the_retry_limit_and_records_failed(store: SmsStore, tmp_path: Path) -> None:
    create_account(store)
    with running_receiver(lambda headers, body: 503) as receiver:
        add_webhook(store, receiver.url)
        async with running_sender(store, fast_settings(tmp_path, webhook_retry_for=0.5)) as client:
            await Source.new(client).deliver(0)
            [recorded] = await settled(store, receiver.url, 1)
    assert isinstance(recorded, WebhookLog.WebhookFailed)
    assert recorded.error == "HTTP 503"
    assert recorded.attempts == len(receiver.posts(503)) >= 3
    assert store.webhook_log(ACCOUNT, receiver.url).failed == 1


async def test_an_unreachable_url_is_retried_then_failed(store: SmsStore, tmp_path: Path) -> None:
    create_account(store)
    with running_receiver() as gone:
        url = gone.url  # a port nobody listens on once the receiver stops
    add_webhook(store, url)
    async with running_sender(store, fast_settings(tmp_path, webhook_retry_for=0.3)) as client:
        await Source.new(client).deliver(0)
        [recorded] = await settled(store, url, 1)
    assert isinstance(recorded, WebhookLog.WebhookFailed) and recorded.attempts >= 2


async def test_a_failed_tls_handshake_is_retried_then_failed_without_stopping_the_sender(
    store: SmsStore, tmp_path: Path
) -> None:
    create_account(store)
    with running_receiver() as plain, running_receiver() as good:
        tls_url = plain.url.replace("http://", "https://")  # the receiver speaks plain HTTP
        add_webhook(store, tls_url)
        add_webhook(store, good.url)
        async with running_sender(store, fast_settings(tmp_path, webhook_retry_for=0.3)) as client:
            source = Source.new(client)
            await source.deliver(0)
            [failed] = await settled(store, tls_url, 1)
            await source.deliver(1)
            await settled(store, good.url, 2)
    assert isinstance(failed, WebhookLog.WebhookFailed) and failed.attempts >= 2
    assert len(good.posts()) == 2


async def test_events_of_one_message_arrive_in_order_while_messages_go_in_parallel(
    store: SmsStore, tmp_path: Path
) -> None:
    def answer(headers: dict[str, str], body: bytes) -> int:
        # Every delivery status fails twice: a reply posted without waiting would overtake it.
        return failing_delivery(headers, body) if json.loads(body)["type"] == "delivery" else 200

    failing_delivery = failing_first(2)
    create_account(store)
    with running_receiver(answer) as receiver:
        add_webhook(store, receiver.url)
        async with running_sender(store, fast_settings(tmp_path)) as client:
            source = Source.new(client)
            await source.deliver(*range(20))
            for index in range(20):
                await source.reply(index, "first")
                await source.reply(index, "second")
            await settled(store, receiver.url, 60)
    by_message: dict[str, list[str]] = {}
    for post in receiver.posts():
        data = post.json()["data"]
        by_message.setdefault(data["message_id"], []).append(data.get("text") or data["status"])
    assert len(by_message) == 20
    assert all(sequence == ["delivered", "first", "second"] for sequence in by_message.values())


async def test_restart_resumes_where_it_stopped_without_loss_or_repeats(store: SmsStore, tmp_path: Path) -> None:
    create_account(store)
    settings = fast_settings(tmp_path)
    with running_receiver() as receiver:
        add_webhook(store, receiver.url)
        async with running_sender(store, settings) as client:
            source = Source.new(client)
            await source.deliver(*range(5))
            await settled(store, receiver.url, 5)
        # Stopped: these are written while no sender runs.
        client, inbox = open_store_channel()
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(run_writer, inbox, store=store))
            source.store = client
            await source.deliver(*range(5, 10))
            client.close()
        async with running_sender(store, settings):
            await settled(store, receiver.url, 10)
    indexes = sorted(int(p.json()["data"]["customer_id"][1:]) for p in receiver.posts())
    assert indexes == list(range(10))  # each once: nothing lost, nothing settled sent again
    assert (tmp_path / "webhooks.db").exists()


async def test_a_post_still_retrying_at_shutdown_is_sent_after_the_restart(store: SmsStore, tmp_path: Path) -> None:
    accepting = False
    create_account(store)
    settings = fast_settings(tmp_path, webhook_retry_for=3600.0)
    with running_receiver(lambda headers, body: 200 if accepting else 503) as receiver:
        add_webhook(store, receiver.url)
        async with running_sender(store, settings) as client:
            await Source.new(client).deliver(0)
            await posts(receiver, 2, status=503)  # retrying: not settled, position not past it
        accepting = True
        async with running_sender(store, settings):
            [recorded] = await settled(store, receiver.url, 1)
    assert isinstance(recorded, WebhookLog.WebhookDelivered) and recorded.attempts == 1
    assert len(receiver.posts()) == 1 and len({p.id for p in receiver.posts(None)}) == 1


# ---- CLI: add, list, remove, replay -------------------------------------------------------------


def run_cli(capsys: pytest.CaptureFixture[str], data_dir: Path, *args: str) -> tuple[int, str, str]:
    status = cli.main([*args, "--data-dir", str(data_dir)])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_webhook_add_prints_the_secret_once_and_list_and_remove_work(
    store: SmsStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    create_account(store)
    status, out, _ = run_cli(capsys, tmp_path, "webhook", "add", ACCOUNT, "https://example.com/hook", "--events", "delivery", "--json")
    assert status == 0
    added = json.loads(out)
    assert added["secret"].startswith("whsec_") and added["events"] == ["delivery"]
    Webhook(added["secret"])  # a secret the library accepts
    status, out, _ = run_cli(capsys, tmp_path, "webhook", "list", ACCOUNT, "--json")
    assert json.loads(out) == [{"url": "https://example.com/hook", "events": "delivery", "delivered": 0, "failed": 0}]
    assert added["secret"] not in out
    status, _, err = run_cli(capsys, tmp_path, "webhook", "add", ACCOUNT, "https://example.com/hook")
    assert status == 2 and "already" in err
    status, _, err = run_cli(capsys, tmp_path, "webhook", "add", ACCOUNT, "ftp://example.com/")
    assert status == 2
    status, _, err = run_cli(capsys, tmp_path, "webhook", "add", ACCOUNT, "https://example.com/x", "--events", "sms")
    assert status == 2 and "--events" in err
    assert run_cli(capsys, tmp_path, "webhook", "remove", ACCOUNT, "https://example.com/hook")[0] == 0
    status, out, _ = run_cli(capsys, tmp_path, "webhook", "list", ACCOUNT, "--json")
    assert json.loads(out) == []
    status, _, err = run_cli(capsys, tmp_path, "webhook", "remove", ACCOUNT, "https://example.com/hook")
    assert status == 2 and "no webhook" in err


async def test_replay_sends_byte_identical_bodies_with_the_same_ids(
    store: SmsStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    create_account(store)
    with running_receiver() as receiver:
        secret = add_webhook(store, receiver.url)
        async with running_sender(store, fast_settings(tmp_path)) as client:
            source = Source.new(client)
            await source.deliver(*range(3))
            await source.reply(1, "yes")
            await settled(store, receiver.url, 4)
        first = receiver.posts()
        position = store.last_position()
        status = await trio.to_thread.run_sync(
            cli.main, ["webhook", "replay", ACCOUNT, "--since", "1", "--until", str(position), "--json", "--data-dir", str(tmp_path)]
        )
        summary = json.loads(capsys.readouterr().out)
        replayed = receiver.posts()[len(first):]
    assert status == 0
    assert summary["events"] == summary["delivered"] == 4 and summary["failed"] == 0
    assert sorted((p.id, p.body) for p in replayed) == sorted((p.id, p.body) for p in first)
    for post in replayed:
        Webhook(secret).verify(post.body, post.headers)
    [replay] = [e for e in store.events.get(webhook_log_id(ACCOUNT, receiver.url)) if isinstance(e, WebhookLog.WebhookReplay)]
    assert replay.events == replay.delivered == 4 and replay.since == "1"


async def test_replay_by_time_selects_the_events_in_the_range(
    store: SmsStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    create_account(store)
    with running_receiver() as receiver:
        add_webhook(store, receiver.url)
        async with running_sender(store, fast_settings(tmp_path)) as client:
            source = Source.new(client)
            await source.deliver(0)
            middle = utc_now().isoformat()
            await trio.sleep(0.01)
            await source.deliver(1, 2)
            await settled(store, receiver.url, 3)
        first = receiver.posts()
        status = await trio.to_thread.run_sync(
            cli.main, ["webhook", "replay", ACCOUNT, "--since", middle, "--json", "--data-dir", str(tmp_path)]
        )
        capsys.readouterr()
        replayed = receiver.posts()[len(first):]
    assert status == 0
    assert sorted(p.body for p in replayed) == sorted(p.body for p in first if p.json()["data"]["customer_id"] != "c0")


async def test_rows_of_other_topics_are_read_past_once(store: SmsStore, tmp_path: Path) -> None:
    """A big file's MessageQueued rows hold nothing to post: once read, the sender's position is
    the log's end, so the next write does not make it scan them again."""
    create_account(store)
    async with trio.open_nursery() as nursery:
        client, inbox = open_store_channel()
        sender = WebhookSender(settings=fast_settings(tmp_path), store=store, writer=client.clone(), clock=utc_now)
        await nursery.start(partial(run_writer, inbox, store=store, on_written=sender.poke))
        await nursery.start(sender.run)
        for _ in range(30):  # 30 events the sender does not post
            await client.run(lambda s: s.add_credits(ACCOUNT, 1))
        end = store.last_position()
        with trio.fail_after(WAIT):
            while True:
                if sender.committed >= end:
                    break
                await trio.sleep(0.01)
        assert sender.committed == end
        nursery.cancel_scope.cancel()
