"""The guard against server-side request forgery: a webhook URL must be http(s) and every
address its host resolves to must be public, unless an operator allows private ones
(``WEBHOOK_ALLOW_PRIVATE``, e.g. for receivers inside the company network). Checked when an
endpoint is registered and again before each delivery (the name may resolve elsewhere by then).
"""
from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

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
    private = sorted(address for address in addresses if not ipaddress.ip_address(address.split("%")[0]).is_global)
    if private:
        raise UrlRefused("Webhooks may not target loopback, private or reserved addresses.",
                         details={"url": [f"{parts.hostname} resolves to {', '.join(private)}."]})
