"""Test harness for several nodes (issue 10 §3): N real `sftpsms serve` processes on one PostgreSQL
schema and one data directory, behind a real HAProxy in TCP mode with health checks.

Each node has fixed ports of its own (kept across its restarts, so HAProxy's configuration names
them once), its own log (data_dir/<node>.log) and its own node name (`--node`): its local state in
data_dir/nodes/<node>. HAProxy's configuration and stats socket live in the test's scratch folder;
`Balancer.states()` reads the stats socket, so a test waits for what HAProxy itself sees (a node
UP again after its restart) instead of sleeping.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import paramiko
import pytest

from eventstore.domain import message_id
from eventstore.store import SmsStore, open_store, postgres_env
from tests.service import Service, running_service, stop_process

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
POSTGRES = os.environ.get("SFTPSMS_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
SCHEMA_PREFIX = "sftpsms_cluster_"  # each cluster drops its own schema when it stops
CHECK_INTERVAL_MS = 200  # HAProxy's health checks: a stopped node is out within one interval


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def postgres_available() -> bool:
    try:
        import psycopg

        env = postgres_env(POSTGRES)
        with psycopg.connect(
            dbname=env["POSTGRES_DBNAME"], host=env["POSTGRES_HOST"], port=env["POSTGRES_PORT"],
            user=env["POSTGRES_USER"], connect_timeout=3,
        ):
            return True
    except Exception:  # noqa: BLE001 - any reason means "not here"
        return False


needs_postgres = pytest.mark.skipif(not postgres_available(), reason="needs PostgreSQL at 127.0.0.1:5432")
needs_cluster = pytest.mark.skipif(
    not (Path(HAPROXY).exists() and postgres_available()),
    reason="needs HAProxy (Debian package haproxy) and PostgreSQL at 127.0.0.1:5432",
)


def drop_schema(schema: str) -> None:
    import psycopg
    from psycopg import sql

    env = postgres_env(POSTGRES)
    with psycopg.connect(
        dbname=env["POSTGRES_DBNAME"], host=env["POSTGRES_HOST"], port=env["POSTGRES_PORT"],
        user=env["POSTGRES_USER"], autocommit=True,
    ) as connection:
        connection.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


HAPROXY_CONFIG = """\
global
    maxconn 512
    stats socket {socket} mode 600 level admin

defaults
    mode tcp
    timeout connect 2s
    timeout client 120s
    timeout server 120s
    # a connection refused by a stopping node is tried again on another one
    retries 3
    option redispatch
    default-server inter {inter}ms fastinter {inter}ms downinter {inter}ms fall 1 rise 2

frontend sftp
    bind 127.0.0.1:{sftp_port}
    default_backend nodes_sftp

backend nodes_sftp
    balance roundrobin
    option tcp-check
    tcp-check expect rstring ^SSH-2\\.0-
{sftp_servers}

frontend http
    bind 127.0.0.1:{http_port}
    default_backend nodes_http

backend nodes_http
    balance roundrobin
    option httpchk GET /health
    http-check expect status 200
{http_servers}
"""


@dataclass
class Balancer:
    """A running HAProxy: the ports clients use, and its view of the nodes."""

    sftp_port: int
    http_port: int
    socket: Path
    process: subprocess.Popen[bytes]

    def states(self) -> dict[tuple[str, str], str]:
        """(backend, node) -> HAProxy's status of it (UP, DOWN, ...), from `show stat`."""
        with socket.socket(socket.AF_UNIX) as connection:
            connection.settimeout(5)
            connection.connect(str(self.socket))
            connection.sendall(b"show stat\n")
            raw = b""
            while chunk := connection.recv(65536):
                raw += chunk
        lines = raw.decode().splitlines()
        header = lines[0].lstrip("# ").split(",")
        found = {}
        for line in lines[1:]:
            if not line:
                continue
            row = dict(zip(header, line.split(","), strict=False))
            if row["svname"] not in ("FRONTEND", "BACKEND"):
                found[(row["pxname"], row["svname"])] = row["status"].split(" ")[0]
        return found

    def wait_state(self, node: str, state: str, timeout: float = 30.0) -> None:
        """Until HAProxy sees `node` in `state` on both backends (SFTP and HTTP)."""
        deadline = time.monotonic() + timeout
        while True:
            states = self.states()
            if all(states.get((backend, node)) == state for backend in ("nodes_sftp", "nodes_http")):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"HAProxy never saw {node} {state}: {states}")
            time.sleep(0.05)


@contextmanager
def running_balancer(scratch: Path, nodes: dict[str, tuple[int, int]]) -> Iterator[Balancer]:
    """HAProxy in front of `nodes` (name -> (sftp port, http port)), until the block ends."""
    scratch.mkdir(parents=True, exist_ok=True)
    sock = scratch / "haproxy.sock"
    sftp_port, http_port = free_port(), free_port()
    config = scratch / "haproxy.cfg"
    config.write_text(
        HAPROXY_CONFIG.format(
            socket=sock,
            inter=CHECK_INTERVAL_MS,
            sftp_port=sftp_port,
            http_port=http_port,
            sftp_servers="\n".join(f"    server {name} 127.0.0.1:{ports[0]} check" for name, ports in nodes.items()),
            http_servers="\n".join(f"    server {name} 127.0.0.1:{ports[1]} check" for name, ports in nodes.items()),
        )
    )
    check = subprocess.run([HAPROXY, "-c", "-f", str(config)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    log = (scratch / "haproxy.log").open("ab")
    process = subprocess.Popen([HAPROXY, "-db", "-f", str(config)], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 10
        while not sock.exists():
            assert process.poll() is None, (scratch / "haproxy.log").read_text()
            assert time.monotonic() < deadline, "HAProxy did not start"
            time.sleep(0.02)
        yield Balancer(sftp_port, http_port, sock, process)
    finally:
        stop_process(process)
        log.close()


@dataclass
class Node:
    name: str
    sftp_port: int
    http_port: int
    service: Service | None = None
    stack: ExitStack = field(default_factory=ExitStack)  # a new one at each start

    def close(self) -> None:
        """Stop the node if it runs (SIGTERM, then SIGKILL after 10 s)."""
        self.stack.close()
        self.service = None


@dataclass
class Cluster:
    """N nodes on one store and one data directory, and the HAProxy in front of them."""

    data_dir: Path
    store_url: str
    nodes: dict[str, Node]
    env: dict[str, str]
    extra: tuple[str, ...]
    balancer: Balancer | None = None

    def start(self, name: str) -> Service:
        node = self.nodes[name]
        assert node.service is None, f"{name} is running"
        node.stack = ExitStack()
        node.service = node.stack.enter_context(
            running_service(
                self.data_dir,
                "--node", name, "--sftp-port", str(node.sftp_port), "--http-port", str(node.http_port), *self.extra,
                env=self.env, log_path=self.data_dir / f"{name}.log", store_url=self.store_url,
            )
        )
        return node.service

    def stop(self, name: str, how: signal.Signals = signal.SIGTERM, timeout: float = 30.0) -> None:
        """Stop a node: SIGTERM (a clean stop, waited for) or SIGKILL (a crash)."""
        node = self.nodes[name]
        assert node.service is not None, f"{name} is not running"
        process = node.service.process
        process.send_signal(how)
        process.wait(timeout=timeout)
        node.stack.close()
        node.service = None

    def log(self, name: str) -> str:
        path = self.data_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def logs(self) -> str:
        return "\n".join(f"---- {name} ----\n{self.log(name)[-6000:]}" for name in self.nodes)

    def store(self) -> SmsStore:
        return open_store(self.data_dir, self.store_url)

    def any_service(self) -> Service:
        return next(node.service for node in self.nodes.values() if node.service is not None)

    def alive(self) -> list[str]:
        return [name for name, node in self.nodes.items() if node.service is not None and node.service.service_alive()]

    @contextmanager
    def sftp(self, username: str, password: str = "secret-pw", timeout: float = 15.0) -> Iterator[paramiko.SFTPClient]:
        """An SFTP session through HAProxy."""
        assert self.balancer is not None
        transport = paramiko.Transport(("127.0.0.1", self.balancer.sftp_port))
        transport.banner_timeout = timeout
        try:
            transport.connect(username=username, password=password)
            client = paramiko.SFTPClient.from_transport(transport)
            assert client is not None
            client.get_channel().settimeout(timeout)
            yield client
        finally:
            transport.close()


@contextmanager
def running_cluster(
    root: Path,
    names: tuple[str, ...] = ("a", "b"),
    *extra: str,
    env: dict[str, str] | None = None,
) -> Iterator[Cluster]:
    """`names` nodes started side by side (at the same moment: they race for the host key and the
    schema), HAProxy in front once every node listens; everything stopped and the schema dropped
    at the end."""
    data_dir = root / "data"
    schema = f"{SCHEMA_PREFIX}cluster_{uuid.uuid4().hex[:12]}"
    separator = "&" if "?" in POSTGRES else "?"
    store_url = f"{POSTGRES}{separator}schema={schema}"
    environment = {"SFTPSMS_TAKEOVER_INTERVAL": "0.5", **(env or {})}  # running_service: sweeps every 0.5 s
    nodes = {name: Node(name, free_port(), free_port()) for name in names}
    cluster = Cluster(data_dir, store_url, nodes, environment, extra)
    try:
        with ExitStack() as stack:
            for node in nodes.values():
                stack.callback(node.close)
            starting = [start_soon(cluster, name) for name in names]
            for name, wait in zip(names, starting, strict=True):
                wait()
                assert nodes[name].service is not None
            cluster.balancer = stack.enter_context(
                running_balancer(root / "haproxy", {name: (n.sftp_port, n.http_port) for name, n in nodes.items()})
            )
            for name in names:
                cluster.balancer.wait_state(name, "UP")
            yield cluster
    finally:
        drop_schema(schema)


def start_soon(cluster: Cluster, name: str) -> Callable[[], None]:
    """Start a node in a thread (running_service waits for its ready line): the nodes of a cluster
    start at the same moment. Returns what waits for it."""
    errors: list[BaseException] = []

    def start() -> None:
        try:
            cluster.start(name)
        except BaseException as error:  # noqa: BLE001 - re-raised by the waiter
            errors.append(error)

    thread = threading.Thread(target=start)
    thread.start()

    def wait() -> None:
        thread.join()
        if errors:
            raise errors[0]

    return wait


# ---- what the store says about uploads -------------------------------------------------------

RECEIVED = "eventstore.domain:File.FileReceived"
COMPLETED = "eventstore.domain:File.FileCompleted"
OPENED = "eventstore.domain:ContactBatch.BatchOpened"
QUEUED = "eventstore.domain:ContactBatch.MessageQueued"
DISPATCH_STARTED = "eventstore.domain:DispatchLog.DispatchStarted"
SUBMITTED = "eventstore.domain:DispatchLog.MessageSubmitted"
DELIVERY_STARTED = "eventstore.domain:DeliveryLog.DeliveryStarted"
REPORTED = "eventstore.domain:DeliveryLog.DeliveryReported"


@dataclass
class Tally:
    """Per upload name: its FileReceived and FileCompleted (with status) events; per message id:
    how many MessageQueued events queued it."""

    received: Counter[str]
    completed: dict[str, list[str]]
    queued: Counter[uuid.UUID]
    submitted: Counter[uuid.UUID]  # per message id: its MessageSubmitted events
    reported: Counter[uuid.UUID]  # per message id: its DeliveryReported events (final statuses)


def tally(store: SmsStore, account: str) -> Tally:
    """Read every file and queueing event of `account` from the store's notification log."""
    received: Counter[str] = Counter()
    completed: dict[str, list[str]] = {}
    names: dict[str, str] = {}  # file id -> name
    batch_files: dict[str, uuid.UUID] = {}  # batch id -> file id
    queued: Counter[uuid.UUID] = Counter()
    submitted: Counter[uuid.UUID] = Counter()
    reported: Counter[uuid.UUID] = Counter()
    log_files: dict[str, uuid.UUID] = {}  # dispatch / delivery log id -> file id
    after = 0
    topics = [RECEIVED, COMPLETED, OPENED, QUEUED, DISPATCH_STARTED, SUBMITTED, DELIVERY_STARTED, REPORTED]
    while True:
        page = store.notifications(after, 10_000, topics=topics)
        if not page:
            break
        for notification in page:
            event = store.mapper.to_domain_event(notification)
            originator = str(notification.originator_id)
            if notification.topic == RECEIVED and event.account == account:  # type: ignore[attr-defined]
                names[originator] = event.name  # type: ignore[attr-defined]
                received[event.name] += 1  # type: ignore[attr-defined]
            elif notification.topic == COMPLETED and originator in names:
                completed.setdefault(names[originator], []).append(event.status)  # type: ignore[attr-defined]
            elif notification.topic == OPENED and event.account == account:  # type: ignore[attr-defined]
                batch_files[originator] = uuid.UUID(event.file_id)  # type: ignore[attr-defined]
            elif notification.topic == QUEUED and originator in batch_files:
                queued[message_id(batch_files[originator], event.index)] += 1  # type: ignore[attr-defined]
            elif notification.topic in (DISPATCH_STARTED, DELIVERY_STARTED) and event.account == account:  # type: ignore[attr-defined]
                log_files[originator] = uuid.UUID(event.file_id)  # type: ignore[attr-defined]
            elif notification.topic == SUBMITTED and originator in log_files:
                submitted[message_id(log_files[originator], event.index)] += 1  # type: ignore[attr-defined]
            elif notification.topic == REPORTED and originator in log_files:
                reported[message_id(log_files[originator], event.index)] += 1  # type: ignore[attr-defined]
        after = page[-1].id
    return Tally(received, completed, queued, submitted, reported)


# ---- the rolling restart (issue 10 §3 (b)) ----------------------------------------------------


def small_upload(i: int, contacts: int = 3, *, send: bool = False) -> bytes:
    """A small file: its messages sent at once when `send`, else waiting for a Start far ahead
    (queued, never sent: what is asserted is the receiving side only)."""
    rows = [{"msisdn": f"2782{i:04d}{j:03d}", "customerId": f"U{i}-{j}"} for j in range(contacts)]
    when = {} if send else {"Start": "2099-01-01 08:00"}
    return orjson.dumps({"Version": 7, **when, "Message_Template": "Later", "Contacts": rows})


@dataclass
class RollingRun:
    """What the client saw during a rolling restart."""

    names: list[str] = field(default_factory=list)  # uploads attempted, in order
    retried: list[str] = field(default_factory=list)  # uploads whose first try failed
    failed: list[str] = field(default_factory=list)  # uploads whose retry failed too
    restarts: list[tuple[str, float, float]] = field(default_factory=list)  # node, seconds down, seconds to UP
    errors: list[str] = field(default_factory=list)  # the first tries' errors, for the log


class Uploader:
    """One client: a session through HAProxy kept open, opened again (once, after a pause) when
    an upload fails, as a client's retry would."""

    RETRY_PAUSE = 1.0  # seconds before the one retry: a few of HAProxy's health checks

    def __init__(self, cluster: Cluster, account: str) -> None:
        self.cluster = cluster
        self.account = account
        self._stack: ExitStack | None = None
        self._sftp: paramiko.SFTPClient | None = None

    def _session(self) -> paramiko.SFTPClient:
        if self._sftp is None:
            self._stack = ExitStack()
            self._sftp = self._stack.enter_context(self.cluster.sftp(self.account))
        return self._sftp

    def _drop(self) -> None:
        if self._stack is not None:
            self._stack.close()
        self._stack = self._sftp = None

    def put(self, name: str, data: bytes) -> None:
        # confirm=False: the answer to CLOSE is the server's word that it has the file
        self._session().putfo(io.BytesIO(data), f"Send_SMS/{name}", confirm=False)

    def upload(self, run: RollingRun, name: str, data: bytes) -> None:
        run.names.append(name)
        try:
            self.put(name, data)
            return
        except Exception as error:  # noqa: BLE001 - whatever the cut looked like, the client retries
            run.retried.append(name)
            run.errors.append(f"{name}: {type(error).__name__}: {error}")
            self._drop()
        time.sleep(self.RETRY_PAUSE)
        try:
            self.put(name, data)
        except Exception as error:  # noqa: BLE001
            run.failed.append(name)
            run.errors.append(f"{name} (retry): {type(error).__name__}: {error}")
            self._drop()

    def close(self) -> None:
        self._drop()


def rolling_restart(
    cluster: Cluster, account: str, *, seconds: float, every: float = 0.2, send: bool = False
) -> RollingRun:
    """Upload a small file every `every` seconds through HAProxy for `seconds`, while each node in
    turn is stopped (SIGTERM, waited for), started again and waited for until HAProxy sees it UP.
    The restarts begin after a tenth of the run and are spread over it. `send`: the files' messages
    are sent at once (else they wait for a Start far ahead)."""
    assert cluster.balancer is not None
    balancer = cluster.balancer
    run = RollingRun()
    done = threading.Event()
    problems: list[BaseException] = []

    def restart_each() -> None:
        try:
            names = list(cluster.nodes)
            gap = seconds / (len(names) + 1)
            for position, name in enumerate(names, start=1):
                if done.wait(max(0.0, gap * position - (time.monotonic() - started))):
                    return
                stopping = time.monotonic()
                cluster.stop(name, signal.SIGTERM)
                down = time.monotonic() - stopping
                cluster.start(name)
                balancer.wait_state(name, "UP")
                run.restarts.append((name, down, time.monotonic() - stopping))
        except BaseException as error:  # noqa: BLE001 - re-raised below
            problems.append(error)

    uploader = Uploader(cluster, account)
    started = time.monotonic()
    restarter = threading.Thread(target=restart_each)
    restarter.start()
    try:
        i = 0
        while time.monotonic() - started < seconds:
            uploader.upload(run, f"roll-{i:05d}.json", small_upload(i, send=send))
            i += 1
            time.sleep(max(0.0, started + i * every - time.monotonic()))
    finally:
        done.set()
        restarter.join()
        uploader.close()
    if problems:
        raise problems[0]
    return run


def wait_reports(cluster: Cluster, account: str, names: list[str], timeout: float) -> dict[str, tuple[str, dict[str, Any]]]:
    """Every upload's report (folder, report), waiting up to `timeout` s for the last of them."""
    folder = cluster.data_dir / "accounts" / account
    deadline = time.monotonic() + timeout
    found: dict[str, tuple[str, dict[str, Any]]] = {}
    while True:
        for name in names:
            if name in found:
                continue
            for place in ("Processed", "Errors"):
                path = folder / place / f"{name}.report.json"
                try:
                    found[name] = (place, orjson.loads(path.read_bytes()))
                    break
                except (FileNotFoundError, orjson.JSONDecodeError):
                    continue
        if len(found) == len(names) or time.monotonic() > deadline:
            return found
        time.sleep(0.1)
