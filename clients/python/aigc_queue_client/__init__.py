"""A small client for the platform's queue API (docs/queue-api.md), for internal services.

It needs only kombu (which speaks Redis and RabbitMQ):

    from aigc_queue_client import QueueClient

    with QueueClient("amqp://guest:guest@rabbit//", account="banners", key_id="qk_…", secret="qsec_…") as client:
        request_id = client.submit("text2img", {"prompt": "a red banner", "batchSize": 2})
        for reply in client.results(idle_timeout=600):
            if reply["type"] in ("job.succeeded", "job.failed", "job.cancelled", "request.rejected"):
                print(reply["requestId"], reply["type"], reply["data"])

``submit`` signs the body (``x-key-id``, ``x-signature: v1=<hex HMAC-SHA256(secret, body)>``)
and publishes it to the account's request queue; ``results`` yields the replies of the
account's reply queue, each once (a reply published twice carries the same ``messageId``),
acknowledging each once the loop body that received it has run (or stopped the loop).
"""
from __future__ import annotations

import hashlib
import hmac
import json
import socket
import time
import uuid
from collections import OrderedDict
from typing import Any, Iterator, Mapping

from kombu import Connection, Consumer, Exchange, Queue

__all__ = ["QueueClient", "sign", "verify_webhook", "FINAL_TYPES"]
__version__ = "1.0.0"

VERSION = 1
FINAL_TYPES = frozenset({"job.succeeded", "job.failed", "job.cancelled", "request.rejected"})
SEEN_KEPT = 100_000


def sign(secret: str, body: bytes) -> str:
    """The ``x-signature`` header of a request body."""
    return "v1=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def verify_webhook(secret: str, headers: Mapping[str, str], body: bytes, tolerance: int = 300,
                   now: float | None = None) -> bool:
    """Whether a webhook delivery is genuine and recent: ``X-Webhook-Signature`` is
    ``t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>``."""
    lowered = {name.lower(): value for name, value in headers.items()}
    parts = dict(part.split("=", 1) for part in lowered.get("x-webhook-signature", "").split(",") if "=" in part)
    if not (parts.get("t", "").isascii() and parts.get("t", "").isdigit()) or "v1" not in parts:
        return False
    if abs((time.time() if now is None else now) - int(parts["t"])) > tolerance:
        return False
    expected = hmac.new(secret.encode("utf-8"), parts["t"].encode("ascii") + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts["v1"])


class QueueClient:
    def __init__(self, broker_url: str, account: str, key_id: str, secret: str, prefix: str = "queue-api",
                 reply_queue: str | None = None) -> None:
        self.account = account
        self.key_id = key_id
        self.secret = secret
        self.exchange = Exchange(prefix, type="direct", durable=True)
        self.request_queue = self._queue(f"{prefix}.{account}.requests")
        self.reply_queue = self._queue(reply_queue or f"{prefix}.{account}.replies")
        self.connection = Connection(broker_url)
        self.duplicates = 0  # replies received again and skipped
        self._seen: OrderedDict[str, None] = OrderedDict()

    def _queue(self, name: str) -> Queue:
        return Queue(name, exchange=self.exchange, routing_key=name, durable=True)

    def submit(self, workflow: str, params: dict[str, Any], *, request_id: str | None = None,
               expected_cost: int | None = None, reply_to: str | None = None, metadata: dict[str, Any] | None = None,
               progress: bool = False) -> str:
        """Publish one render request; returns its request id (a new one unless given)."""
        request_id = request_id or uuid.uuid4().hex
        message: dict[str, Any] = {"version": VERSION, "requestId": request_id, "workflow": workflow,
                                   "params": params}
        if expected_cost is not None:
            message["expectedCost"] = expected_cost
        if reply_to is not None:
            message["replyTo"] = reply_to
        if metadata is not None:
            message["metadata"] = metadata
        if progress:
            message["progress"] = True
        self.publish_body(json.dumps(message).encode("utf-8"))
        return request_id

    def publish_body(self, body: bytes, headers: dict[str, str] | None = None) -> None:
        """Publish raw bytes to the request queue, signed unless ``headers`` are given."""
        headers = headers if headers is not None else {"x-key-id": self.key_id, "x-signature": sign(self.secret, body)}
        producer = self.connection.Producer()
        producer.publish(body, exchange=self.exchange, routing_key=self.request_queue.routing_key,
                         declare=[self.request_queue, self.reply_queue], content_type="application/json",
                         content_encoding="binary", headers=headers, delivery_mode=2, retry=True)

    def results(self, idle_timeout: float | None = None) -> Iterator[dict[str, Any]]:
        """The replies, each once, until ``idle_timeout`` seconds pass without one (None: forever)."""
        pending: list[Any] = []

        def on_message(_body: Any, message: Any) -> None:
            pending.append(message)

        with Consumer(self.connection, queues=[self.reply_queue], callbacks=[on_message], accept=None,
                      prefetch_count=100):
            last = time.monotonic()
            while idle_timeout is None or time.monotonic() - last < idle_timeout:
                if not pending:
                    try:
                        self.connection.drain_events(timeout=0.5)
                    except socket.timeout:
                        continue
                while pending:
                    message = pending.pop(0)
                    reply = json.loads(message.body)
                    last = time.monotonic()
                    try:
                        if self._first_time(reply.get("messageId")):
                            yield reply
                    finally:  # also when the loop stops at this reply: it was handed over
                        message.ack()

    def _first_time(self, message_id: str | None) -> bool:
        if message_id is None:
            return True
        if message_id in self._seen:
            self.duplicates += 1
            return False
        self._seen[message_id] = None
        if len(self._seen) > SEEN_KEPT:
            self._seen.popitem(last=False)
        return True

    def close(self) -> None:
        self.connection.release()

    def __enter__(self) -> "QueueClient":
        return self

    def __exit__(self, *_exc: Any) -> None:
        self.close()
