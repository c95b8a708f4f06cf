"""The Redis event bus: live events for one user, and a short replayable stream per job.

Every event is ``{"type", "data", "ts"}`` (plus ``"id"``, the job stream entry id, for
job events). It is published to the user's pub/sub channel for live delivery; job
events are also appended to a capped per-job stream so a client that reconnects can
ask for everything after the last id it saw.
"""
from __future__ import annotations

import json
import time
from typing import Any, Iterator

import redis

JOB_STREAM_MAXLEN = 500
JOB_STREAM_TTL_SECONDS = 24 * 3600


def redis_client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, decode_responses=True, health_check_interval=30)


def user_channel(user_id: int) -> str:
    return f"events:user:{user_id}"


def job_stream(job_id: str) -> str:
    return f"events:job:{job_id}"


class EventBus:
    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    def publish(self, user_id: int, event_type: str, data: dict[str, Any],
                job_id: str | None = None) -> dict[str, Any]:
        event: dict[str, Any] = {"type": event_type, "data": data, "ts": time.time()}
        if job_id is not None:
            stream = job_stream(job_id)
            body = json.dumps(event)
            pipe = self.redis.pipeline()
            pipe.xadd(stream, {"event": body}, maxlen=JOB_STREAM_MAXLEN, approximate=True)
            pipe.expire(stream, JOB_STREAM_TTL_SECONDS)
            event["id"] = pipe.execute()[0]
        self.redis.publish(user_channel(user_id), json.dumps(event))
        return event

    def job_events_after(self, job_id: str, last_id: str = "0") -> list[dict[str, Any]]:
        """Events of one job after ``last_id`` (exclusive), oldest first."""
        entries = self.redis.xrange(job_stream(job_id), min=f"({last_id}" if last_id != "0" else "-")
        events = []
        for entry_id, fields in entries:
            event = json.loads(fields["event"])
            event["id"] = entry_id
            events.append(event)
        return events

    def listen(self, user_id: int, timeout: float = 1.0) -> Iterator[dict[str, Any] | None]:
        """Yield the user's live events; yields None every ``timeout`` seconds of silence."""
        pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(user_channel(user_id))
        try:
            while True:
                message = pubsub.get_message(timeout=timeout)
                yield json.loads(message["data"]) if message else None
        finally:
            pubsub.close()
