"""The guard against server-side request forgery: a webhook URL must be http(s) and every
address its host resolves to must be public, unless an operator allows private ones
(``WEBHOOK_ALLOW_PRIVATE``, e.g. for receivers inside the company network). Checked when an
endpoint is registered and again before each delivery (the name may resolve elsewhere by then).

A name can also resolve to a public address when checked and to a private one a moment later,
when the delivery connects (DNS rebinding). ``public_only_session`` closes that gap where it
opens: each connection checks the address it actually reached before a byte is sent.
"""
from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import NewConnectionError

from shared.errors import Unprocessable


class UrlRefused(Unprocessable):
    code = "WEBHOOK_URL_REFUSED"


def check_url(url: str, allow_private: bool) -> None:
    """Raise UrlRefused unless ``url`` may receive webhooks."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UrlRefused("A webhook URL must be http:// or https:// with a host.", details={"url": ["Not allowed."]})
    if parts.username or parts.password:
        raise UrlRefused("A webhook URL may not carry credentials.", details={"url": ["Not allowed."]})
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise UrlRefused("The port is invalid.", details={"url": ["Invalid port."]}) from exc
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)}
    except (socket.gaierror, UnicodeError) as exc:
        raise UrlRefused("The webhook's host does not resolve.", details={"url": ["Unknown host."]}) from exc
    if allow_private:
        return
    private = sorted(address for address in addresses if not is_public(address))
    if private:
        raise UrlRefused("Webhooks may not target loopback, private or reserved addresses.",
                         details={"url": [f"{parts.hostname} resolves to {', '.join(private)}."]})


def is_public(address: str) -> bool:
    return ipaddress.ip_address(address.split("%")[0]).is_global


class _PublicPeer:
    """Refuses a connection whose peer is not a public address (the socket is closed unused)."""

    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        peer = sock.getpeername()[0]
        if not is_public(peer):
            sock.close()
            raise NewConnectionError(self, f"{self.host} resolved to {peer} when connecting: not a public address")
        return sock


class _PublicHTTPConnection(_PublicPeer, HTTPConnection):
    pass


class _PublicHTTPSConnection(_PublicPeer, HTTPSConnection):
    pass


class _PublicHTTPPool(HTTPConnectionPool):
    ConnectionCls = _PublicHTTPConnection


class _PublicHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _PublicHTTPSConnection


class _PublicOnlyAdapter(HTTPAdapter):
    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _PublicHTTPPool, "https": _PublicHTTPSPool}


def public_only_session(allow_private: bool) -> requests.Session:
    """A session for deliveries: no proxies from the environment, and (unless private receivers
    are allowed) no connection to a loopback, private or reserved address, whatever DNS says."""
    session = requests.Session()
    session.trust_env = False  # deliveries never go through a proxy set in the environment
    if not allow_private:
        for scheme in ("http://", "https://"):
            session.mount(scheme, _PublicOnlyAdapter())
    return session
