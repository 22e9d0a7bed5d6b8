"""The supervisor: one nursery holding the whole actor tree of a running service.

Start order matters and is explicit: the pass-one worker processes (they import while the rest
starts), the writer (everyone talks to the store through it), then the read-model follower, the
file pipeline and the validators (uploads into Validate), the gateway side, the sweeper, the SFTP door, whose port is reported once it
listens, and last recovery of files a stop or crash left in work/: in the background, so no
backlog and no poisoned file can keep the doors shut.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path
from uuid import UUID

import trio

from actors.bridge import AsyncioPortal
from actors.contact_batch import QueueRequest, run_contact_batches
from actors.controls import refile_report
from actors.delivery_csv import run_delivery_csv
from actors.dispatch_leases import DispatchLeases
from actors.dispatcher import Dispatcher
from actors.expiry import Expiry, run_expiry
from actors.file import (
    STOP_GRACE,
    FileArrived,
    FileContext,
    FileFiled,
    InFlight,
    run_file_worker,
    utc_now,
)
from actors.ftp_server import FtpLimits, serve_ftp
from actors.gateway import Gateway, GatewayReport
from actors.http_gateway import HttpGateway
from actors.http_inbound import serve_http
from actors.notifier import Notify, run_notifier
from actors.pass_one import PassOneWorkers
from actors.projector import Projector
from actors.receipts import ReportRecorder, run_receipts
from actors.recovery import run_recovery
from actors.session import WEB, AccountGate, DoorRules
from actors.sftp_server import DoorLimits, serve_sftp
from actors.simulator import Simulator
from actors.smpp_gateway import SmppGateway
from actors.submissions import RecentSubmissions
from actors.sweeper import run_sweeper
from actors.validator import run_validator
from actors.web.context import WebContext
from actors.webhooks import WebhookSender
from actors.writer import open_store_channel, run_writer
from eventstore.leases import open_leases
from eventstore.rate_buckets import SharedBuckets
from eventstore.store import SmsStore, open_store
from eventstore.webhook_tracking import PostgresTracking
from sftpsms.config import Settings
from sftpsms.gateways import (
    SIMULATOR,
    GatewayConfig,
    HttpGatewayConfig,
    SimulatorGatewayConfig,
    SmppGatewayConfig,
    load_gateways,
)

log = logging.getLogger(__name__)

ARRIVALS_BUFFER = 64
VALIDATIONS_BUFFER = 16
NOTIFY_BUFFER = 256
REPORTS_BUFFER = 1000


def build_gateway(
    config: GatewayConfig, settings: Settings, reports: trio.MemorySendChannel[GatewayReport]
) -> Gateway:
    """One gateway from its configuration. The simulator takes its seed and delay from the
    settings (SFTPSMS_SIMULATOR_*) unless the gateways file tunes it."""
    if isinstance(config, SimulatorGatewayConfig):
        if config == SimulatorGatewayConfig():
            config = SimulatorGatewayConfig(seed=settings.simulator_seed, delay=settings.simulator_delivery_delay)
        # Several nodes on one store stand for one SMSC: each reads the others' journals when it takes
        # over an account (actors/simulator.py).
        peers = settings.local_dir.parent if settings.store else None
        return Simulator(settings.simulator_dir, reports, config, remember=settings.simulator_remember, peers=peers)
    if isinstance(config, SmppGatewayConfig):
        return SmppGateway(config, reports, journal_dir=settings.data_dir / "gateways" / config.name)
    assert isinstance(config, HttpGatewayConfig)
    return HttpGateway(config, reports)


@dataclass(frozen=True)
class Running:
    """What a started service tells its caller."""

    sftp_port: int
    simulator: Simulator
    ftp_port: int | None = None
    http_port: int | None = None  # the inbound HTTP endpoint (receipts, replies), when open


async def run_service(
    settings: Settings,
    portal: AsyncioPortal,
    *,
    filed: trio.MemorySendChannel[FileFiled] | None = None,
    clock: Callable[[], datetime] = utc_now,
    task_status: trio.TaskStatus[Running] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the service until cancelled.

    Resource handling: every channel end is owned by exactly one actor, which closes it; the
    originals are closed here after handing out clones. The pass-one worker processes are stopped
    and the event store closed on exit.
    Error handling: actors catch what belongs to one file, round or receipt and go on; an error
    escaping an actor is a bug and stops the service (the process supervisor restarts it and
    recovery resumes from the events).
    """
    store = open_store(settings.data_dir, settings.store)
    settings.local_dir.mkdir(parents=True, exist_ok=True)
    # What this node holds among several (files being processed, names being picked up, accounts
    # it sends for, the webhook sender); on SQLite every lease is granted. Closed last, after this
    # node's open attempts are recorded as paused, so no other node resumes a file before that.
    leases = open_leases(store.env, settings.node_name)
    pass_one = PassOneWorkers(settings.pass_one_processes - 1) if settings.pass_one_processes > 1 else None
    in_flight = InFlight()
    # Several nodes (a PostgreSQL store): leases say which node sends which account's messages and
    # webhooks, and the service's and gateways' rates are drawn from buckets in the store
    # (actors/dispatch_leases.py). One node (SQLite) keeps everything as it was.
    cluster = bool(settings.store)
    buckets = SharedBuckets(store.env) if cluster else None
    try:
        if pass_one is not None:
            try:
                await trio.to_thread.run_sync(pass_one.start)
            except OSError as error:  # each big file tries again, or checks itself
                log.warning("cannot start the pass-one workers (%s)", error)
        projector = Projector(store, settings.readmodels_db)
        async with trio.open_nursery() as nursery:
            store_client, store_inbox = open_store_channel()
            webhook_sender = WebhookSender(
                settings=settings, store=store, writer=store_client.clone(), clock=clock,
                leases=leases if cluster else None,
                open_tracking=partial(PostgresTracking, store.env) if cluster else None,
            )

            def on_written() -> None:
                projector.poke()
                webhook_sender.poke()

            await nursery.start(partial(run_writer, store_inbox, store=store, on_written=on_written))
            await nursery.start(projector.run)
            await nursery.start(webhook_sender.run)

            queue_send, queue_receive = trio.open_memory_channel[QueueRequest](0)
            await nursery.start(partial(run_contact_batches, queue_receive, store=store_client.clone()))

            notify_send, notify_receive = trio.open_memory_channel[Notify](NOTIFY_BUFFER)
            await nursery.start(
                partial(run_notifier, notify_receive, settings=settings, store=store_client.clone(), clock=clock)
            )

            arrivals_send, arrivals_receive = trio.open_memory_channel[FileArrived](ARRIVALS_BUFFER)
            context = FileContext(
                settings=settings,
                store=store_client,
                projector=projector,
                queue=queue_send,
                in_flight=in_flight,
                notify=notify_send,
                filed=filed,
                clock=clock,
                pass_one=pass_one,
                leases=leases,
            )
            with arrivals_receive:
                for _ in range(settings.file_workers):
                    await nursery.start(partial(run_file_worker, arrivals_receive.clone(), context=context))
            # Uploads into Validate: checked like real ones, never sent (issue 12).
            validations_send, validations_receive = trio.open_memory_channel[FileArrived](VALIDATIONS_BUFFER)
            with validations_receive:
                for _ in range(settings.file_workers):  # one big validation does not hold up the others
                    await nursery.start(partial(run_validator, validations_receive.clone(), context=context))
            reports_send, reports_receive = trio.open_memory_channel[GatewayReport](REPORTS_BUFFER)
            gateway_set = load_gateways(settings.gateways_path)
            gateways = {
                name: build_gateway(config, settings, reports_send.clone())
                for name, config in gateway_set.gateways.items()
            }
            simulator = gateways[SIMULATOR]
            assert isinstance(simulator, Simulator)
            for gateway in gateways.values():
                await nursery.start(gateway.run)
            door_rules = DoorRules(settings)  # one login guard and connection count for every door
            http_port = None
            if settings.http_port >= 0:
                routes = {k: h for g in gateways.values() if isinstance(g, HttpGateway) for k, h in g.routes().items()}
                rest_gate = AccountGate(
                    rules=door_rules,
                    settings=settings,
                    store=store_client.clone(),
                    nursery=nursery,
                    arrivals=arrivals_send.clone(),
                    in_flight=in_flight,
                    clock=clock,
                    channel="rest",
                    validations=validations_send.clone(),
                )
                web = WebContext(
                    settings=settings, store=store_client.clone(), gate=rest_gate, in_flight=in_flight, clock=clock,
                    catch_up=projector.catch_up,
                    panel_gate=AccountGate(
                        rules=door_rules, settings=settings, store=store_client.clone(), nursery=nursery,
                        arrivals=arrivals_send.clone(), in_flight=in_flight, clock=clock, channel=WEB,
                    ),
                )
                http_port = await nursery.start(
                    partial(serve_http, routes, host=settings.http_host, port=settings.http_port, context=web)
                )
                log.info("http listening on %s:%d", settings.http_host, http_port)
            elif any(isinstance(g, HttpGateway) for g in gateways.values()):
                log.warning("http gateways configured but no --http-port: their receipts and replies cannot arrive")
            recent = RecentSubmissions()
            recorder = ReportRecorder(recent, settings.readmodels_db, settings.optout_words)
            await nursery.start(
                partial(
                    run_receipts, reports_receive, store=store_client.clone(), recorder=recorder,
                    on_recorded=simulator.recorded,
                )
            )
            validity = {name: config.validity for name, config in gateway_set.gateways.items()}
            expiry = Expiry(settings=settings, store=store, validity=validity)
            await nursery.start(partial(run_expiry, reports_send.clone(), expiry=expiry))
            dispatcher = Dispatcher(
                store=store_client.clone(),
                gateways=gateways,
                settings=settings,
                recent=recent,
                reports=reports_send,
                gateway_rates={name: config.rate for name, config in gateway_set.gateways.items()},
                reader=store,
                # A cancel, pause or resume honoured: the file's report says so (issue 12).
                on_control=partial(_refile_report, settings, store),
            )
            if cluster:
                keeper = DispatchLeases(
                    dispatcher, leases=leases, reader=store, readmodels_db=settings.readmodels_db, gateways=gateways,
                    buckets=buckets, gateway_rates={name: config.rate for name, config in gateway_set.gateways.items()},
                )
                await nursery.start(keeper.run)
            await nursery.start(dispatcher.run)
            await nursery.start(partial(run_delivery_csv, settings=settings, store=store, leases=leases))

            await nursery.start(
                partial(
                    run_sweeper, arrivals_send.clone(), settings=settings, in_flight=in_flight, clock=clock,
                    validations=validations_send.clone(),
                )
            )
            gate = AccountGate(
                rules=door_rules,
                settings=settings,
                store=store_client.clone(),
                nursery=nursery,
                arrivals=arrivals_send,
                in_flight=in_flight,
                clock=clock,
                validations=validations_send.clone(),
            )
            await nursery.start(gate.watch)
            ftp_port = None
            if settings.ftp_port >= 0:
                ftp_gate = AccountGate(
                    rules=door_rules,
                    settings=settings,
                    store=store_client.clone(),
                    nursery=nursery,
                    arrivals=arrivals_send.clone(),
                    in_flight=in_flight,
                    clock=clock,
                    channel="ftp",
                    validations=validations_send.clone(),
                )
                await nursery.start(ftp_gate.watch)
                ftp_port = await nursery.start(
                    partial(
                        serve_ftp,
                        ftp_gate,
                        host=settings.sftp_host,
                        port=settings.ftp_port,
                        limits=FtpLimits.from_settings(settings),
                        certfile=Path(settings.ftp_certfile) if settings.ftp_certfile else None,
                        keyfile=Path(settings.ftp_keyfile) if settings.ftp_keyfile else None,
                    )
                )
                log.info("ftp listening on %s:%d", settings.sftp_host, ftp_port)
            validations_send.close()  # the sweeper and the gates hold clones
            port = await nursery.start(
                partial(
                    serve_sftp,
                    portal,
                    gate,
                    host=settings.sftp_host,
                    port=settings.sftp_port,
                    host_key_path=settings.host_key,
                    limits=DoorLimits.from_settings(settings),
                )
            )
            log.info("sftp listening on %s:%d", settings.sftp_host, port)
            await nursery.start(partial(run_recovery, context=context))
            # What start-up built (modules, metadata, the actor tree) lives as long as the service:
            # out of the collector's sight, a full collection during a big file takes ~2 ms, not
            # the ~130 ms measured walking it all.
            gc.freeze()
            task_status.started(Running(sftp_port=port, simulator=simulator, ftp_port=ftp_port, http_port=http_port))
    finally:
        with trio.CancelScope(shield=True):
            # Every actor has stopped: attempts cut short by the stop are paused, not failed.
            await trio.to_thread.run_sync(end_open_attempts, store, in_flight)
            if pass_one is not None:
                await trio.to_thread.run_sync(pass_one.close)
            await trio.to_thread.run_sync(leases.close)
        if buckets is not None:
            buckets.close()
        store.close()


def end_open_attempts(store: SmsStore, in_flight: InFlight) -> None:
    """Record the end of the attempts this process still has open (a stop, or a full disk): not
    the files' fault, unless pass 1 did not stop when told. Should this fail (the disk is still full), the next start counts them as
    crashed, which is the safe side."""
    attempts = dict(in_flight.attempts)
    if not attempts:
        return
    reasons: dict[tuple[bool, str], list[tuple[UUID, int]]] = {}
    for file_id, number in attempts.items():
        if file_id in in_flight.abandoned:
            key = (True, f"pass 1 did not stop within {STOP_GRACE:g} s when the service stopped")
        else:
            key = (False, in_flight.unrecorded.get(file_id, "the service stopped"))
        reasons.setdefault(key, []).append((file_id, number))
    for (failed, reason), ends in reasons.items():
        try:
            store.end_processing(ends, failed=failed, reason=reason)
        except Exception as error:
            log.warning("cannot record the end of %d attempts (%s): counted as crashed at the next start", len(ends), error)
        else:
            log.info("paused %d files (%s): resumed at the next start", len(ends), reason)


async def _refile_report(settings: Settings, store: SmsStore, file_id: UUID) -> None:
    await trio.to_thread.run_sync(refile_report, settings, store, file_id)
