"""The client's address, believing ``X-Forwarded-For`` only as far as trusted proxies vouch;
and when a trusted proxy received the request (``X-Request-Start``).

Each proxy appends the address it received the request from, so the header is read from
the right: starting at the socket peer, while the current hop is a trusted proxy, step to
the address it reports. The first address that is not a trusted proxy is the client.
Anything a client wrote further left is ignored, and with no trusted proxies configured
(the default) the header is never read. Werkzeug's ProxyFix trusts a fixed number of hops,
not networks, hence this resolver.
"""
from __future__ import annotations

import ipaddress
import re
import time
from typing import Iterable, Union

from flask import current_app, g, request

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
Address = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]


def parse_networks(raw: str) -> tuple[Network, ...]:
    """``"10.0.0.0/8, 192.168.1.7 fd00::/8"`` → networks; ValueError names a bad entry."""
    networks = []
    for part in raw.replace(",", " ").split():
        try:
            networks.append(ipaddress.ip_network(part, strict=False))
        except ValueError as exc:
            raise ValueError(f"not an address or CIDR network: {part!r}") from exc
    return tuple(networks)


def _address(text: str) -> Address | None:
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def resolve_client(peer: str, forwarded_for: Iterable[str], trusted: tuple[Network, ...]) -> str:
    """The client address for a request from ``peer`` carrying these ``X-Forwarded-For`` values."""
    client = _address(peer)
    if client is None:
        return peer
    hops = [hop for value in forwarded_for for hop in value.split(",") if hop.strip()]
    while hops and any(client in network for network in trusted):
        reported = _address(hops.pop())
        if reported is None:
            break  # a malformed hop: the trusted proxy that passed it on is as far as we can see
        client = reported
    return str(client)


def client_address() -> str:
    """The current request's client address (computed once per request)."""
    if "client_address" not in g:
        trusted = current_app.extensions["gateway_config"].trusted_proxies
        peer = request.remote_addr or ""
        g.client_address = resolve_client(peer, request.headers.getlist("X-Forwarded-For"), trusted) if trusted else peer
    return g.client_address


REQUEST_START = re.compile(r"(?:t=)?(\d{1,20}(?:\.\d{1,9})?)")
# A stamp further back than this is a clock error, not a queue: it is ignored.
MAX_PROXY_QUEUE_SECONDS = 3600


def parse_request_start(header: str, now: float) -> float | None:
    """``X-Request-Start`` as Unix seconds: ``t=<seconds[.fraction]>`` (nginx), or whole
    milliseconds (Heroku) or microseconds (Apache) since the epoch; None when it is malformed
    or implausible (in the future, or over an hour ago)."""
    match = REQUEST_START.fullmatch(header.strip())
    if match is None:
        return None
    value = float(match.group(1))
    if value > 1e14:
        value /= 1_000_000
    elif value > 1e11:
        value /= 1000
    if not now - MAX_PROXY_QUEUE_SECONDS <= value <= now:
        return None
    return value


def note_proxy_request_start() -> None:
    """A request that a trusted proxy stamped counts as received when the proxy received it
    (``shared.web.request_received_at``), so time spent queued in front of the gateway counts
    against deadlines such as admission's."""
    trusted = current_app.extensions["gateway_config"].trusted_proxies
    header = request.headers.get("X-Request-Start")
    peer = _address(request.remote_addr or "")
    if not trusted or header is None or peer is None or not any(peer in network for network in trusted):
        return
    started = parse_request_start(header, time.time())
    if started is not None:
        g.request_received_at = min(g.request_received_at, started)
