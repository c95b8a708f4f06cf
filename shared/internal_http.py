"""JSON-over-HTTP calls between platform services: service token, request id, the envelope.

Every service's ``client.py`` (how others call that service) is built on ``InternalHttp``.
A non-2xx envelope becomes ``ServiceError`` carrying the callee's own status, code and
details; no answer, a timeout or a reply without an envelope becomes ``ServiceUnavailable``
with the client's ``unavailable_code``. A call made on behalf of a user may forward the
user's access token (``access_token=``), so the callee applies that user's rights.

Kept-alive connections: a server closes a connection that stayed idle for its keep-alive
time, and a request written onto it at that moment meets a closed connection. Two rules
keep that from failing a call. The pools (``shared.http_transport``, the gateway's hop too)
never reuse a connection idle longer than ``POOL_IDLE_SECONDS``, half the keep-alive every
internal gunicorn runs with (``SERVER_KEEPALIVE_SECONDS``, set by ``deploy/local.py``), so a
reused connection is never one the server is closing. And an idempotent call (a GET, or a
POST the callee applies once per idempotency key: every credits movement carries one) is
sent once more on a fresh connection when the connection was refused, reset or closed
before its answer was complete.
"""
from __future__ import annotations

from typing import Any
from urllib.parse import urlencode, urlsplit

import orjson
from flask import has_request_context

from shared.errors import ServiceError, ServiceUnavailable
from shared.http_transport import Broken, ClosedEarly, Pool, Unreachable, UpstreamError
from shared.web import REQUEST_ID_HEADER, SERVICE_TOKEN_HEADER, request_id

Timeout = float | tuple[float, float]
PAGE_SIZE = 100
MAX_PAGES = 1000  # 100 000 items: a bound, so a misbehaving service cannot loop a caller forever


class InternalHttp:
    """Calls to one service (``base_url``) over one pool of ``shared.http_transport``, the
    gateway's own hop: a call costs the caller a fraction of urllib3's CPU (no ``http.client``
    header parsing, retry or redirect machinery), and internal calls never go through a proxy
    set in the environment anyway."""

    def __init__(self, base_url: str, service_token: str, timeout: Timeout, unavailable_code: str,
                 pool_size: int = 32) -> None:
        self.base_url = base_url.rstrip("/")
        url = urlsplit(self.base_url)
        self._prefix = url.path
        tls = url.scheme == "https"
        self._pool = Pool(url.hostname or "127.0.0.1", url.port or (443 if tls else 80), pool_size, tls=tls)
        self._connect_timeout, self._read_timeout = timeout if isinstance(timeout, tuple) else (timeout, timeout)
        self.unavailable_code = unavailable_code
        self._service_token = service_token

    def get(self, path: str, params: dict[str, Any] | None = None, access_token: str | None = None) -> Any:
        if params:  # as requests did: a None value leaves its parameter out
            path += "?" + urlencode({key: value for key, value in params.items() if value is not None}, doseq=True)
        return self._call("GET", path, access_token, idempotent=True)

    def post(self, path: str, body: dict[str, Any], access_token: str | None = None,
             idempotent: bool = False) -> Any:
        """``idempotent``: the callee applies this call once however often it arrives (an
        idempotency key in ``body``, or a read), so a call cut off by a closed connection is
        sent again."""
        return self._call("POST", path, access_token, idempotent=idempotent,
                          body=orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS))

    def get_all_pages(self, path: str, access_token: str | None = None) -> list[dict[str, Any]]:
        """Every item of a paged listing (``{"items", "total"}`` with ``page``/``pageSize``)."""
        items: list[dict[str, Any]] = []
        for page in range(1, MAX_PAGES + 1):
            data = self.get(path, {"page": page, "pageSize": PAGE_SIZE}, access_token)
            items.extend(data["items"])
            if not data["items"] or len(items) >= data["total"]:
                break
        return items

    def close(self) -> None:
        self._pool.close()

    def _call(self, method: str, path: str, access_token: str | None, idempotent: bool,
              body: bytes | None = None) -> Any:
        headers = [(SERVICE_TOKEN_HEADER, self._service_token)]
        if has_request_context():
            headers.append((REQUEST_ID_HEADER, request_id()))
        if access_token:
            headers.append(("Authorization", f"Bearer {access_token}"))
        if body is not None:
            headers.append(("Content-Type", "application/json"))
        attempts = 2 if idempotent else 1
        for attempt in range(1, attempts + 1):
            try:
                answer = self._pool.request(method, self._prefix + path, headers, body,
                                            self._connect_timeout, self._read_timeout)
                status, data = answer.status, answer.read()
                break
            except (Unreachable, ClosedEarly, Broken) as exc:
                # Refused, or reset or closed before the answer was complete: nothing was applied
                # twice, as the callee applies an idempotent call once. A timeout is not retried.
                if attempt < attempts:
                    continue
                raise self._unreachable(exc) from exc
            except UpstreamError as exc:  # a connect or read timeout
                raise self._unreachable(exc) from exc
        envelope = _envelope(data)
        if envelope is None:
            raise ServiceUnavailable(f"{self.base_url} answered {status} without an envelope.",
                                     code=self.unavailable_code, details={"upstreamStatus": status})
        if envelope.get("success") is True and status < 400:
            return envelope.get("data")
        error = envelope.get("error") or {}
        raise ServiceError(error.get("message"), code=error.get("code"), status=status,
                           details=error.get("details"))

    def _unreachable(self, exc: Exception) -> ServiceUnavailable:
        return ServiceUnavailable(f"{self.base_url} is unreachable ({exc.__class__.__name__}).",
                                  code=self.unavailable_code)


def is_not_found(exc: ServiceError, code: str) -> bool:
    """The callee answered 404 with this error code (the thing asked about does not exist)."""
    return exc.status == 404 and exc.code == code


def _envelope(data: bytes) -> dict | None:
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(body, dict) or "success" not in body:
        return None
    return body
