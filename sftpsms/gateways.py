"""Gateway configuration: which gateways exist, how to reach them, how fast they may be used.

Read from a TOML file (`gateways.toml` in the data directory, or SFTPSMS_GATEWAYS_FILE), one table
per gateway; routes (`sftpsms route add PREFIX --gateway NAME`) choose among them by number prefix.
The embedded simulator always exists as `simulator` (a `[gateways.simulator]` table only tunes it).

    [gateways.bulkhttp]
    type = "http"
    url = "https://sms.example.net/v1/messages"
    rate = 200                 # SMS parts per second through this gateway
    concurrency = 8            # requests in flight at once
    token = "outbound-secret"  # sent as "Authorization: Bearer ..."
    inbound_token = "s3cret"   # expected on our /gateways/bulkhttp/... endpoint

    [gateways.smsc]
    type = "smpp"
    host = "smsc.example.net"
    port = 2775
    system_id = "acme"
    password = "pw"
    rate = 30
    validity = 172800          # seconds without a final status before a message is marked expired (48 h)
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

SIMULATOR = "simulator"
# Seconds after submission by which a gateway gives a message its final status, as SMPP's
# validity_period: a message still without one is then marked expired (actors/expiry.py).
VALIDITY = 48 * 3600.0


class GatewayConfigError(ValueError):
    """The gateways file is wrong; the message names the gateway and the key."""


@dataclass(frozen=True)
class SimulatorGatewayConfig:
    name: str = SIMULATOR
    rate: float | None = None  # parts/s; None: only the global and account rates apply
    seed: int = 7
    delay: float = 0.5  # seconds until a receipt (each message's delay is 0.5–1.5 × this)
    failed_per_mille: int = 30
    expired_per_mille: int = 10
    reply_per_mille: int = 0  # share of messages that get a reply
    reply_text: str = "STOP"  # what simulated replies say
    validity: float = VALIDITY


@dataclass(frozen=True)
class HttpGatewayConfig:
    name: str
    url: str
    rate: float | None = None
    token: str = ""  # outbound: "Authorization: Bearer <token>" when set
    inbound_token: str = ""  # inbound receipts/replies must carry "Authorization: Bearer <it>" when set
    timeout: float = 10.0  # seconds per request
    retries: int = 5  # further tries after a 5xx, timeout or connection error
    backoff: float = 0.5  # seconds before the first retry; doubles each time
    concurrency: int = 8  # requests in flight at once (the dispatcher's sender tasks for it)
    validity: float = VALIDITY


@dataclass(frozen=True)
class SmppGatewayConfig:
    name: str
    host: str
    port: int = 2775
    system_id: str = ""
    password: str = ""
    system_type: str = ""
    rate: float | None = None
    enquire_link: float = 30.0  # seconds between enquire_link PDUs
    reconnect_backoff: float = 1.0  # seconds before reconnecting; doubles up to 60
    response_timeout: float = 10.0  # seconds to wait for a submit_sm_resp
    window: int = 10  # submit_sm PDUs outstanding at once (one message's parts go one at a time)
    throttle_backoff: float = 0.2  # seconds before retrying a throttled part; doubles each time
    throttle_retries: int = 8  # retries of a throttled part before the message waits (unavailable)
    source_addr_ton: int = 5  # alphanumeric sender ids; numeric ones use 1 (international)
    source_addr_npi: int = 0
    dest_addr_ton: int = 1
    dest_addr_npi: int = 1
    reply_parts_timeout: float = 60.0  # seconds to wait for the rest of a long reply, then deliver what came
    validity: float = VALIDITY


GatewayConfig = SimulatorGatewayConfig | HttpGatewayConfig | SmppGatewayConfig

_KINDS: dict[str, type[Any]] = {
    "simulator": SimulatorGatewayConfig,
    "http": HttpGatewayConfig,
    "smpp": SmppGatewayConfig,
}


@dataclass(frozen=True)
class GatewaySet:
    gateways: dict[str, GatewayConfig] = field(default_factory=dict)

    def __contains__(self, name: object) -> bool:
        return name in self.gateways

    def __getitem__(self, name: str) -> GatewayConfig:
        return self.gateways[name]

    def names(self) -> list[str]:
        return sorted(self.gateways)


NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


def parse_gateways(document: dict[str, Any]) -> GatewaySet:
    """Validate a parsed TOML document; the simulator is added when not configured."""
    tables = document.get("gateways", {})
    if not isinstance(tables, dict):
        raise GatewayConfigError("[gateways] must be a table of gateway tables")
    gateways: dict[str, GatewayConfig] = {}
    for name, table in tables.items():
        if not NAME.fullmatch(name):  # it names a folder (the SMPP journal) and a URL path (HTTP)
            raise GatewayConfigError(f"gateway {name!r}: a name is letters, digits, '-' and '_'")
        if not isinstance(table, dict):
            raise GatewayConfigError(f"gateway {name}: must be a table")
        kind = table.get("type", SIMULATOR if name == SIMULATOR else None)
        if kind not in _KINDS:
            raise GatewayConfigError(f"gateway {name}: type must be one of {', '.join(_KINDS)}, not {kind!r}")
        if (kind == SIMULATOR) != (name == SIMULATOR):
            raise GatewayConfigError(f"gateway {name}: only the gateway named 'simulator' is the simulator")
        cls = _KINDS[kind]
        known = {f.name: f for f in fields(cls)}
        values: dict[str, Any] = {"name": name}
        for key, value in table.items():
            if key == "type":
                continue
            if key not in known or key == "name":
                raise GatewayConfigError(f"gateway {name}: unknown key {key!r}")
            values[key] = value
        try:
            config = cls(**values)
        except TypeError as error:  # a required key is missing
            raise GatewayConfigError(f"gateway {name}: {error}") from None
        rate = config.rate
        if rate is not None and (not isinstance(rate, int | float) or rate <= 0):
            raise GatewayConfigError(f"gateway {name}: rate must be a positive number")
        if not isinstance(config.validity, int | float) or config.validity <= 0:
            raise GatewayConfigError(f"gateway {name}: validity must be a positive number of seconds")
        if isinstance(config, HttpGatewayConfig):
            check_http(config)
        gateways[name] = config
    gateways.setdefault(SIMULATOR, SimulatorGatewayConfig())
    return GatewaySet(gateways)


def check_http(config: HttpGatewayConfig) -> None:
    """Numbers an HTTP gateway cannot work with are configuration errors, not runtime surprises."""
    if not config.url.startswith(("http://", "https://")):
        raise GatewayConfigError(f"gateway {config.name}: url must start with http:// or https://")
    if not isinstance(config.concurrency, int) or isinstance(config.concurrency, bool) or config.concurrency < 1:
        raise GatewayConfigError(f"gateway {config.name}: concurrency must be a whole number of at least 1")
    if not isinstance(config.retries, int) or isinstance(config.retries, bool) or config.retries < 0:
        raise GatewayConfigError(f"gateway {config.name}: retries must be a whole number of at least 0")
    for key in ("timeout", "backoff"):
        value = getattr(config, key)
        if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
            raise GatewayConfigError(f"gateway {config.name}: {key} must be a positive number of seconds")


def load_gateways(path: Path | None) -> GatewaySet:
    """The gateways in `path`, or only the simulator when there is no file."""
    if path is None or not path.exists():
        return parse_gateways({})
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise GatewayConfigError(f"{path}: {error}") from None
    return parse_gateways(document)
