"""How other services use the safety service: the content filter they run in their own
process (``ContentFilter``), the audit records they send (``record``), and the internal
HTTP API (``SafetyClient``).

The list travels through Redis: the safety service writes it to ``safety:terms`` and moves
``safety:terms:version`` on every change. A filter asks for the version at most every
``SAFETY_REFRESH_SECONDS`` and rebuilds its automaton when it moved. When Redis holds no
list it reads the safety service's ``GET /internal/terms`` (at most every 10 s; the service
then writes the list to Redis again); when neither answers it keeps the list it has
(fail-soft: the last list, or none before the first load, logged).
"""
from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

import redis as redis_lib

from shared.config import Settings
from shared.errors import ServiceError, Unprocessable
from shared.internal_http import InternalHttp, Timeout
from services.safety.config import load_config
from services.safety.categories import category_name, language, rejection_message
from services.safety.matcher import Hit, Matcher, normalise, normalise_light

__all__ = ["AUDIT_STREAM", "ContentFilter", "ContentRejected", "Hit", "SafetyClient", "Verdict", "normalise",
           "normalise_light", "record"]

LIST_KEY = "safety:terms"
VERSION_KEY = "safety:terms:version"
AUDIT_STREAM = "safety:audit"
AUDIT_STREAM_MAXLEN = 1_000_000
EXCERPT_CHARS = 2000
FALLBACK_BACKOFF_SECONDS = 10.0

log = logging.getLogger(__name__)


class ContentRejected(Unprocessable):
    """422 CONTENT_REJECTED: the text matched a ``block`` entry. Names the category, never the term."""

    code = "CONTENT_REJECTED"


@dataclass
class Verdict:
    """What one submission matched: ``flagged`` holds ``(field, hit)`` of ``review`` entries."""

    flagged: list[tuple[str, Hit]] = field(default_factory=list)

    @property
    def needs_review(self) -> bool:
        return bool(self.flagged)

    @property
    def categories(self) -> list[str]:
        return sorted({hit.category for _, hit in self.flagged})


def _request_language() -> str:
    from flask import has_request_context, request
    return language(request.headers.get("Accept-Language")) if has_request_context() else "zh-CN"


def record(client: redis_lib.Redis, action: str, source: str, *, actor_id: int | None = None,
           actor_name: str = "", category: str | None = None, severity: str | None = None,
           subject: str = "", excerpt: str = "", detail: Mapping[str, Any] | None = None,
           media_key: str | None = None) -> None:
    """Append one audit record to ``safety:audit`` (the safety service stores it). ``media_key``
    names a stored file moderators may view (a withheld image under ``quarantine/``); the row
    owns it and retention deletes it with the last row naming it. A Redis failure is logged,
    never raised: the decision itself has been taken."""
    entry = {"action": action, "source": source, "actorId": actor_id, "actorName": actor_name or "",
             "category": category, "severity": severity, "subject": subject, "excerpt": excerpt[:EXCERPT_CHARS],
             "detail": dict(detail or {}), "mediaKey": media_key, "at": time.time()}
    try:
        client.xadd(AUDIT_STREAM, {"event": json.dumps(entry, ensure_ascii=False)},
                    maxlen=AUDIT_STREAM_MAXLEN, approximate=True)
    except redis_lib.RedisError as exc:
        log.error("safety audit record lost (%s): %s %s %s", exc.__class__.__name__, action, source, subject)


class SafetyClient:
    def __init__(self, base_url: str, service_token: str, timeout: Timeout = (0.5, 3.0)) -> None:
        self.http = InternalHttp(base_url, service_token, timeout, unavailable_code="SAFETY_UNAVAILABLE")

    def terms(self) -> dict[str, Any]:
        """``{"version", "items": [{"id", "text", "kind", "category", "severity"}]}``."""
        return dict(self.http.get("/internal/terms"))

    def close(self) -> None:
        self.http.close()


class ContentFilter:
    """The term list, compiled, kept current; and the checks callers make with it."""

    def __init__(self, redis: redis_lib.Redis, safety: SafetyClient | None, refresh_seconds: float = 1.0) -> None:
        self.redis = redis
        self.safety = safety
        self.refresh_seconds = refresh_seconds
        self._matcher = Matcher([], version=-1)
        self._checked_at = float("-inf")
        self._fallback_after = float("-inf")
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings, redis: redis_lib.Redis) -> "ContentFilter":
        """The filter a service's process keeps (``SAFETY_REFRESH_SECONDS``, ``SAFETY_URL``)."""
        return cls(redis, SafetyClient(settings.safety_url, settings.service_token),
                   load_config(settings).refresh_seconds)

    # -- the list ---------------------------------------------------------------------
    def matcher(self) -> Matcher:
        now = time.monotonic()
        if now - self._checked_at >= self.refresh_seconds and self._lock.acquire(blocking=False):
            try:
                self._checked_at = now
                self.refresh()
            finally:
                self._lock.release()
        return self._matcher

    def refresh(self) -> None:
        """Load the list if its version moved (or fall back to the service, see the module doc)."""
        try:
            version = self.redis.get(VERSION_KEY)
            if version is not None and int(version) == self._matcher.version:
                return
            raw = self.redis.get(LIST_KEY) if version is not None else None
        except redis_lib.RedisError as exc:
            log.warning("term list version unreadable (%s); keeping version %s", exc.__class__.__name__,
                        self._matcher.version)
            return
        if raw is not None:
            self._load(json.loads(raw))
            return
        if self.safety is None or time.monotonic() < self._fallback_after:
            return
        self._fallback_after = time.monotonic() + FALLBACK_BACKOFF_SECONDS
        try:
            self._load(self.safety.terms())
        except ServiceError as exc:
            log.warning("term list unavailable (%s); keeping version %s", exc.code, self._matcher.version)

    def _load(self, data: Mapping[str, Any]) -> None:
        started = time.perf_counter()
        self._matcher = Matcher(data["items"], version=int(data["version"]))
        log.info("term list version %s loaded: %s entries in %.0f ms", self._matcher.version, self._matcher.size,
                 (time.perf_counter() - started) * 1000)

    # -- checks -----------------------------------------------------------------------
    def check(self, fields: Mapping[str, str | None], *, source: str, actor_id: int | None = None,
              actor_name: str = "", subject: str = "") -> Verdict:
        """Match every field. A ``block`` match is recorded and raises 422 CONTENT_REJECTED
        (localised by the request's Accept-Language, naming the category); ``review`` matches
        are recorded as flags and returned."""
        matcher = self.matcher()
        verdict = Verdict()
        for name, text in fields.items():
            if not text:
                continue
            hits = matcher.hits(text)
            if not hits:
                continue
            if hits[0].severity == "block":
                first = hits[0]
                record(self.redis, "blocked", f"{source}.{name}", actor_id=actor_id, actor_name=actor_name,
                       category=first.category, severity="block", subject=subject, excerpt=text,
                       detail={"termIds": [h.term_id for h in hits if h.severity == "block"]})
                lang = _request_language()
                raise ContentRejected(rejection_message(first.category, lang), details={
                    "field": name, "category": first.category, "categoryName": category_name(first.category, lang)})
            verdict.flagged.extend((name, hit) for hit in hits)
        for name in dict.fromkeys(name for name, _ in verdict.flagged):
            hits = [hit for field_name, hit in verdict.flagged if field_name == name]
            record(self.redis, "flagged", f"{source}.{name}", actor_id=actor_id, actor_name=actor_name,
                   category=hits[0].category, severity="review", subject=subject, excerpt=str(fields[name]),
                   detail={"termIds": [h.term_id for h in hits], "categories": sorted({h.category for h in hits})})
        return verdict

    def flagged_quietly(self, fields: Mapping[str, str | None]) -> list[str]:
        """Categories the fields match (either severity), without recording or raising: for
        text checked before (a saved output's prompt), matched again under today's list."""
        matcher = self.matcher()
        return sorted({hit.category for text in fields.values() if text for hit in matcher.hits(text)})
