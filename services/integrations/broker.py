"""The queue API's broker plumbing with kombu, the same on Redis and RabbitMQ (``BROKER_URL``):
one durable direct exchange named after ``QUEUE_API_PREFIX``, durable queues bound to it by
their own name, persistent JSON messages.

Requests are pulled (``basic_get``) rather than pushed: the bridge takes a message of an
account only while the account has room for another job, and a message it cannot take yet
stays in the broker, where it is safe and visible. Publishing goes through kombu's
producer pool (thread-safe); each pulling thread owns its connection. On Redis the transport is
the platform's (``shared.tasks.RedisTransport``): a channel used after its connection was lost
fails as a lost connection.
"""
from __future__ import annotations

import json
from typing import Any

from kombu import Connection, Exchange, Queue
from kombu.message import Message
from kombu.pools import producers

from services.integrations.contract import QueueNames
from shared.tasks import broker_transport

PUBLISH_RETRY = {"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 2.0}


class Broker:
    def __init__(self, url: str, names: QueueNames) -> None:
        self.url = url
        self.names = names
        self.exchange = Exchange(names.exchange, type="direct", durable=True)
        self.connection = self.connect(transport_options={"confirm_publish": True})

    def connect(self, **options: Any) -> Connection:
        """A new connection to the broker (the publishers' pool's, or one pulling thread's own)."""
        return Connection(self.url, transport=broker_transport(self.url), **options)

    def queue(self, name: str) -> Queue:
        return Queue(name, exchange=self.exchange, routing_key=name, durable=True)

    def publish(self, queue_name: str, message: dict[str, Any], headers: dict[str, Any] | None = None) -> None:
        """Publish one JSON message to ``queue_name`` (declared, with the exchange, if needed)."""
        with producers[self.connection].acquire(block=True, timeout=10) as producer:
            producer.publish(json.dumps(message, ensure_ascii=False).encode("utf-8"), exchange=self.exchange,
                             routing_key=queue_name, declare=[self.queue(queue_name)],
                             content_type="application/json", content_encoding="binary", headers=headers or {},
                             delivery_mode=2, retry=True, retry_policy=PUBLISH_RETRY)

    def puller(self) -> "Puller":
        return Puller(self)

    def close(self) -> None:
        self.connection.release()


class Puller:
    """One thread's connection, from which it pulls messages of any request queue."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.connection = broker.connect()
        self.channel = None
        self._queues: dict[str, Queue] = {}

    def get(self, queue_name: str) -> Message | None:
        """The next message of ``queue_name`` (unacknowledged), or None when it is empty."""
        if self.channel is None:
            self.channel = self.connection.channel()
            self._queues = {}
        bound = self._queues.get(queue_name)
        if bound is None:
            bound = self.broker.queue(queue_name)(self.channel)
            bound.declare()
            self._queues[queue_name] = bound
        return bound.get(no_ack=False)

    def reset(self) -> None:
        """Drop the connection after a broker error; the next ``get`` reconnects."""
        try:
            self.connection.release()
        finally:
            self.connection = self.broker.connect()
            self.channel = None
            self._queues = {}

    def close(self) -> None:
        self.connection.release()
