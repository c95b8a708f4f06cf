"""The queue bridge: render requests in over the broker, replies out.

- ``Admissions`` (``QUEUE_API_THREADS`` threads): each pulls from every active account's
  request queue in turn, checks the message (``contract.read_request``), records it in the
  request log and admits it through the render API's one admission path
  (``POST /internal/jobs``, with the account's limits), then publishes ``request.accepted``
  or ``request.rejected`` and only then acknowledges the message. An account with as many
  jobs as its ``max_active_jobs`` is not pulled from until one of them ends: its requests
  wait in its queue (flow control, not refusal). A render API that does not answer leaves
  the message in the queue, to be tried again.
- ``OutcomeRelay``: reads job outcomes from ``platform:events`` (consumer group
  ``integrations-queue``: none is missed while the bridge is down, each is handled once,
  an unhandled one is retried) and publishes the final reply of the request they belong to.
- ``ProgressRelay``: relays ``job.progress`` for requests that asked for it, from each
  job's event stream.

Replies are published at least once and carry a stable ``messageId``; the request log's
conditional updates make a second publication happen only after a crash between publishing
and recording.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import redis
from kombu.message import Message
from sqlalchemy import select

from shared.db import Database, utcnow
from shared.errors import ServiceError, ServiceUnavailable
from shared.events import JOB_OUTCOMES, Announcement, GroupConsumer, job_stream, user_announcement
from shared.outage import Outage
from services.integrations.broker import Broker, Puller
from services.integrations.contract import (DeadLetter, QueueNames, Rejection, Request, dead_letter_message,
                                           read_request, rejection_reply, reply)
from services.integrations.models import ServiceAccount
from services.integrations.outcomes import STATUS_OF, JobOutcomes
from services.integrations.request_log import RequestLog
from services.integrations.signing import SigningKeys
from services.render.client import RenderClient

log = logging.getLogger(__name__)

ACCOUNTS_REFRESH_SECONDS = 5.0
FULL_ACCOUNT_RETRY_SECONDS = 2.0  # a full account is tried again after this even without an outcome
IDLE_SECONDS = 0.05  # the wait after a pass over every queue found nothing
RENDER_RETRY_SECONDS = 2.0
ENDED_KEPT_SECONDS = 60.0
OUTCOME_GROUP = "integrations-queue"
IDEMPOTENCY_PREFIX = "queue:"


@dataclass(frozen=True)
class Account:
    user_id: int
    name: str
    keys: dict[str, str]  # accepted signing keys: id → secret
    previous_key_id: str | None  # dropped from ``keys`` once ``previous_key_expires`` passes
    previous_key_expires: datetime | None
    max_active_jobs: int
    workflows: list[str] | None
    url_ttl_seconds: int
    lane: str


def accepted_keys(account: Account, now: datetime | None = None) -> dict[str, str]:
    """The account's keys a message may be signed with now (the previous one only until it expires)."""
    if account.previous_key_expires is None or account.previous_key_expires > (now or utcnow()):
        return account.keys
    return {key: secret for key, secret in account.keys.items() if key != account.previous_key_id}


class AccountDirectory:
    """The active service accounts, re-read from the database every few seconds."""

    def __init__(self, db: Database, keys: SigningKeys, refresh_seconds: float = ACCOUNTS_REFRESH_SECONDS) -> None:
        self.db = db
        self.keys = keys
        self.refresh_seconds = refresh_seconds
        self._lock = threading.Lock()
        self._read_at = float("-inf")
        self._accounts: dict[int, Account] = {}

    def accounts(self) -> list[Account]:
        with self._lock:
            if time.monotonic() - self._read_at > self.refresh_seconds:
                with self.db.read() as session:
                    rows = session.scalars(select(ServiceAccount).where(ServiceAccount.is_active.is_(True))
                                           .order_by(ServiceAccount.user_id)).all()
                self._accounts = {row.user_id: self._account(row) for row in rows}
                self._read_at = time.monotonic()
            return list(self._accounts.values())

    def _account(self, row: ServiceAccount) -> Account:
        keys = {row.key_id: self.keys.secret(row.key_id)}
        if row.previous_key_id is not None:
            keys[row.previous_key_id] = self.keys.secret(row.previous_key_id)
        return Account(row.user_id, row.name, keys, row.previous_key_id, row.previous_key_expires_at,
                       row.max_active_jobs, row.allowed_workflows, row.url_ttl_seconds, row.lane)

    def by_user(self, user_id: int) -> Account | None:
        return {account.user_id: account for account in self.accounts()}.get(user_id)


class FlowControl:
    """Accounts found full (render answered QUEUE_LIMIT): not pulled from until one of their
    jobs ends, or ``FULL_ACCOUNT_RETRY_SECONDS`` pass."""

    def __init__(self) -> None:
        self._full_until: dict[int, float] = {}

    def full(self, user_id: int) -> None:
        self._full_until[user_id] = time.monotonic() + FULL_ACCOUNT_RETRY_SECONDS

    def freed(self, user_id: int) -> None:
        self._full_until.pop(user_id, None)

    def may_pull(self, user_id: int) -> bool:
        return self._full_until.get(user_id, 0.0) <= time.monotonic()


class ProgressRelay(threading.Thread):
    """Relays ``job.progress`` of requests that asked for it (``progress: true``), read from
    the jobs' own event streams (``events:job:<id>``) from their start, so none is missed
    however soon the job runs; kept for 24 hours, so a restarted bridge sends them again
    (with the same ``messageId``s) for the requests still in flight."""

    def __init__(self, client: redis.Redis, directory: AccountDirectory, broker: Broker, requests: RequestLog) -> None:
        super().__init__(name="queue-progress", daemon=True)
        self.redis = client
        self.directory = directory
        self.broker = broker
        self.requests = requests
        self.stop_event = threading.Event()
        self._lock = threading.Lock()
        self._jobs: dict[str, tuple[str, str, Any, str]] = {}  # job id → (reply queue, request id, metadata, last id)
        self._ended: dict[str, float] = {}  # job id → when its outcome was read (its final reply flushes it)

    def watch(self, job_id: str, reply_to: str, request_id: str, metadata: Any) -> None:
        with self._lock:
            self._jobs.setdefault(job_id, (reply_to, request_id, metadata, "0"))

    def flush(self, job_id: str) -> None:
        """Relay what is left of a finished job's progress, then stop watching it (called
        before its final reply, so progress never follows the outcome)."""
        with self._lock:
            watched = self._jobs.pop(job_id, None)
            self._ended.pop(job_id, None)
        if watched is None:
            return
        reply_to, request_id, metadata, last_id = watched
        for _entry_id, fields in self.redis.xrange(job_stream(job_id), min=f"({last_id}" if last_id != "0" else "-"):
            event = json.loads(fields["event"])
            if event.get("type") == "job.progress":
                self._forward(reply_to, request_id, metadata, job_id, event.get("data") or {})

    def run(self) -> None:
        restored = False
        outage = Outage(log, "progress relay")
        while not self.stop_event.is_set():
            try:
                if not restored:  # the requests in flight when the bridge (re)started
                    for row in self.requests.in_flight([account.user_id for account in self.directory.accounts()]):
                        self.watch(row.job_id, row.reply_to, row.request_id, row.meta)
                    restored = True
                self.relay_once()
            except Exception as exc:  # Redis or the broker failed; progress is best effort, the loop goes on
                outage.failed(exc, f"retrying in {RENDER_RETRY_SECONDS} s")
                self.stop_event.wait(RENDER_RETRY_SECONDS)
            else:
                outage.passed()

    def relay_once(self, block_ms: int = 500) -> None:
        with self._lock:
            # A job whose final reply another bridge process sent is never flushed here.
            for job_id in [job for job, at in self._ended.items() if time.monotonic() - at > ENDED_KEPT_SECONDS]:
                self._jobs.pop(job_id, None)
                self._ended.pop(job_id)
            watched = dict(self._jobs)
        if not watched:
            self.stop_event.wait(block_ms / 1000)
            return
        streams = {job_stream(job_id): entry[3] for job_id, entry in watched.items()}
        for stream, entries in self.redis.xread(streams, block=block_ms) or []:
            job_id = stream.split(":", 2)[2]
            reply_to, request_id, metadata, _ = watched[job_id]
            for entry_id, fields in entries:
                event = json.loads(fields["event"])
                if event.get("type") == "job.progress":
                    self._forward(reply_to, request_id, metadata, job_id, event.get("data") or {})
                elif event.get("type") in JOB_OUTCOMES:
                    self._ended.setdefault(job_id, time.monotonic())
                with self._lock:
                    if job_id in self._jobs:
                        self._jobs[job_id] = (reply_to, request_id, metadata, entry_id)

    def _forward(self, reply_to: str, request_id: str, metadata: Any, job_id: str, data: dict[str, Any]) -> None:
        percent = int(data.get("percent", 0))
        self.broker.publish(reply_to, reply("job.progress", request_id, job_id, metadata, {
            "step": int(data.get("step", 0)), "totalSteps": int(data.get("totalSteps", 0)), "percent": percent},
            message_id=f"{request_id}:progress:{percent}"))


class Admissions:
    """Pulls requests, checks them and admits them; one instance per thread."""

    def __init__(self, directory: AccountDirectory, names: QueueNames, broker: Broker, requests: RequestLog,
                 render: RenderClient, flow: FlowControl, progress: ProgressRelay, max_bytes: int) -> None:
        self.directory = directory
        self.names = names
        self.broker = broker
        self.requests = requests
        self.render = render
        self.flow = flow
        self.progress = progress
        self.max_bytes = max_bytes

    def run(self, stop: threading.Event) -> None:
        puller = self.broker.puller()
        outage = Outage(log, f"admission pass ({threading.current_thread().name})")
        try:
            while not stop.is_set():
                try:
                    taken = self.pass_once(puller)
                except Exception as exc:  # the broker, the database or Redis failed: the message stays unacknowledged
                    outage.failed(exc, "reconnecting to the broker")
                    puller.reset()  # closing the channel hands an unacknowledged message back to its queue
                    stop.wait(RENDER_RETRY_SECONDS)
                    continue
                outage.passed()
                if not taken:
                    stop.wait(IDLE_SECONDS)
        finally:
            puller.close()

    def pass_once(self, puller: Puller) -> int:
        """Take at most one message of each account that has room; returns how many were taken."""
        taken = 0
        for account in self.directory.accounts():
            if not self.flow.may_pull(account.user_id):
                continue
            message = puller.get(self.names.requests(account.name))
            if message is not None:
                taken += 1
                self.handle(account, message)
        return taken

    def handle(self, account: Account, message: Message) -> None:
        body = message.body if isinstance(message.body, bytes) else str(message.body).encode("utf-8")
        headers = dict(message.headers or {})
        queue = self.names.requests(account.name)
        verdict = read_request(body, headers, account.name, accepted_keys(account), self.names,
                               self.max_bytes)
        if isinstance(verdict, DeadLetter):
            # Counted before it is published: a dead letter anyone can read is already in the counts.
            self.requests.dead_letter(verdict.reason, queue, account.user_id, verdict.key_id, verdict.detail, len(body))
            self.broker.publish(self.names.dead_letter, dead_letter_message(verdict, queue, headers, body))
            log.info("dead letter from %s: %s (%s)", queue, verdict.reason, verdict.detail)
            message.ack()
            return
        claim = self.requests.claim(account.user_id, verdict.request_id, verdict.reply_to, verdict.metadata,
                                    isinstance(verdict, Request) and verdict.progress)
        if not claim.fresh:
            self._duplicate(claim.row_id, verdict.reply_to, verdict.request_id, claim.job_id, verdict.metadata,
                            claim.status, claim.received_at)
        elif isinstance(verdict, Rejection):
            self._reject(claim.row_id, verdict)
        elif not self._admit(account, claim.row_id, verdict, claim.received_at):
            message.requeue()  # not now: the account is full, or the render API did not answer
            return
        message.ack()

    def _admit(self, account: Account, row_id: int, request: Request, received_at: str) -> bool:
        """Admit the request; False when it must wait in its queue."""
        try:
            admitted = self.render.admit(account.user_id, request.admission_body(),
                                         IDEMPOTENCY_PREFIX + request.request_id, account.max_active_jobs,
                                         account.workflows, account.lane)
        except ServiceUnavailable as exc:  # no answer from the render API at all
            log.warning("render API unreachable (%s); %s waits in its queue", exc.message, request.request_id)
            time.sleep(RENDER_RETRY_SECONDS)
            return False
        except ServiceError as exc:
            if exc.code == "QUEUE_LIMIT":
                self.flow.full(account.user_id)
                return False
            self._reject(row_id, Rejection(request.request_id, request.reply_to, request.metadata, exc.code,
                                           exc.message, exc.details), exc.status)
            return True
        job = admitted["job"]
        cost = int(job["pricePerImage"]) * int(job["imagesRequested"])
        if request.progress:
            self.progress.watch(job["id"], request.reply_to, request.request_id, request.metadata)
        if self.requests.admitted(row_id, job["id"], cost):
            self.broker.publish(request.reply_to, reply("request.accepted", request.request_id, job["id"],
                                                        request.metadata, {
                "cost": cost, "pricePerImage": int(job["pricePerImage"]), "images": int(job["imagesRequested"]),
                "queuePosition": admitted.get("queuePosition"),
                "estimatedStartSeconds": admitted.get("estimatedStartSeconds")}))
        else:
            self._duplicate(row_id, request.reply_to, request.request_id, job["id"], request.metadata, "admitted",
                            received_at)
        return True

    def _reject(self, row_id: int, rejection: Rejection, status: int | None = None) -> None:
        if self.requests.rejected(row_id, rejection.code):
            self.broker.publish(rejection.reply_to, rejection_reply(rejection, status))

    def _duplicate(self, row_id: int, reply_to: str, request_id: str, job_id: str | None, metadata: Any,
                   status: str, received_at: str) -> None:
        self.requests.replayed(row_id)
        self.broker.publish(reply_to, reply("request.duplicate", request_id, job_id, metadata, {
            "status": status, "firstReceivedAt": received_at}, message_id=f"{request_id}:duplicate:{time.time_ns()}"))


class OutcomeRelay:
    """Publishes the final reply of a queue request when its job's outcome is announced."""

    def __init__(self, directory: AccountDirectory, broker: Broker, requests: RequestLog, render: RenderClient,
                 outcomes: JobOutcomes, flow: FlowControl, progress: ProgressRelay) -> None:
        self.directory = directory
        self.broker = broker
        self.requests = requests
        self.render = render
        self.outcomes = outcomes
        self.flow = flow
        self.progress = progress

    def consumer(self, client: redis.Redis) -> GroupConsumer:
        return GroupConsumer(client, OUTCOME_GROUP, f"{socket.gethostname()}-{os.getpid()}", self.handle)

    def handle(self, fields: dict[str, str]) -> None:
        outcome = user_announcement(fields)
        if outcome is None or outcome.type not in JOB_OUTCOMES or outcome.job_id is None:
            return
        account = self.directory.by_user(outcome.user_id)
        if account is None:
            return
        try:
            self._answer(account, outcome)
        finally:
            self.flow.freed(account.user_id)  # one of its jobs ended: its queue is read again

    def _answer(self, account: Account, outcome: Announcement) -> None:
        row = self.requests.find_by_job(account.user_id, outcome.job_id)
        if row is None:  # the outcome came before admission recorded the job, or the job came over HTTP
            job = self.render.job(outcome.job_id)
            key = (job or {}).get("idempotencyKey") or ""
            if not key.startswith(IDEMPOTENCY_PREFIX):
                return
            row = self.requests.attach_job(account.user_id, key[len(IDEMPOTENCY_PREFIX):], outcome.job_id)
            if row is None:
                return
        if row.answered_at is not None:
            return
        self.progress.flush(outcome.job_id)
        data = self.outcomes.data(outcome, account.url_ttl_seconds)
        message = reply(outcome.type, row.request_id, outcome.job_id, row.meta, data,
                        message_id=f"{row.request_id}:outcome")
        self.broker.publish(row.reply_to, message)
        error = data.get("error", {}).get("code")
        self.requests.answered(row.id, STATUS_OF[outcome.type], data["charged"], error)
