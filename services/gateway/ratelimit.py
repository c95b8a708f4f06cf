"""Rate limits kept in Redis, shared by every gateway process.

Each limit is a generic cell rate (GCRA): ``5/minute`` admits a burst of 5, then one more
every 12 seconds. A limit costs one Redis key holding its "theoretical arrival time".
All the limits that apply to one request are checked and charged in one atomic script
call: if any refuses, none is charged, so a refused sign-in does not also use up the
account's allowance. Redis's clock is the only clock, so gateways agree.

The global per-address ceiling applies to every request, so it stays off the hot path:
a request that counts only against it is checked against what this process already
knows (addresses it has seen run out, and until when), and counted after its response
has been sent. Counts reach Redis at once while an address is near its allowance (a
quarter of what is left, or less, would be one batch); otherwise this process gathers up
to ``COUNT_BATCH`` requests or ``COUNT_BATCH_SECONDS`` per address and charges them in one
call. A charge that uses up an address's allowance blocks that address here until Redis
says the next request is allowed. So each gateway process lets through at most the
requests in flight, plus one batch, when the allowance runs out.
Sign-in, registration (also by single sign-on), password-reset mail and generation are
checked synchronously.
"""
from __future__ import annotations

import logging
import math
import re
import threading
import time
from dataclasses import dataclass
from typing import Sequence

import redis
from flask import Flask, request

from services.gateway.clientaddr import client_address
from shared.errors import ServiceError, ServiceUnavailable, error_response
from shared.secret_compare import same_secret
from shared.tokens import optional_user
from shared.web import SERVICE_TOKEN_HEADER, after_response

log = logging.getLogger(__name__)

_UNITS = {"sec": 1, "second": 1, "min": 60, "minute": 60, "hour": 3600, "day": 86400}
_RATE = re.compile(r"\s*(\d+)\s*(?:/|per)\s*(\d+(?:\.\d+)?)?\s*([a-z]+?)s?\s*", re.IGNORECASE)

# KEYS: one per limit. ARGV: per limit, the emission interval and the period, in µs.
# Returns {0, 0, µs until the next request would be admitted} when admitted (and charged),
# else {index of the refusing limit, µs to wait, 0}.
_GCRA = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000000 + tonumber(now_parts[2])
local next_tats = {}
local refused, wait = 0, 0
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[2 * i - 1])
  local period = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', key) or now)
  if tat < now then tat = now end
  local next_tat = tat + interval
  local allowed_at = next_tat - period
  if allowed_at > now and allowed_at - now > wait then
    refused, wait = i, allowed_at - now
  end
  next_tats[i] = next_tat
end
if refused > 0 then return {refused, wait, 0} end
local next_wait = 0
for i, key in ipairs(KEYS) do
  redis.call('SET', key, next_tats[i], 'PX', math.ceil((next_tats[i] - now) / 1000))
  local next_allowed = next_tats[i] + tonumber(ARGV[2 * i - 1]) - tonumber(ARGV[2 * i]) - now
  if next_allowed > next_wait then next_wait = next_allowed end
end
return {0, 0, next_wait}
"""

# KEYS[1]: the limit. ARGV: its emission interval and period in µs, and how many requests
# to count. Counts requests already answered, so it always charges them, but never beyond a
# used-up allowance. Returns {µs until the next request would be admitted, how many more
# would be admitted now}.
_COUNT = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000000 + tonumber(now_parts[2])
local interval, period, count = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
tat = math.min(tat + interval * count, now + period)
redis.call('SET', KEYS[1], tat, 'PX', math.max(1, math.ceil((tat - now) / 1000)))
return {math.max(0, tat + interval - period - now), math.max(0, math.floor((period - (tat - now)) / interval))}
"""
COUNT_BATCH = 50
COUNT_BATCH_SECONDS = 0.1


@dataclass(frozen=True)
class Rate:
    count: int
    period: float  # seconds
    text: str      # as configured, for messages: "5/minute"

    @property
    def interval_us(self) -> int:
        return max(1, round(self.period * 1_000_000 / self.count))


def parse_rate(text: str) -> Rate:
    """``"5/minute"``, ``"3 per hour"``, ``"10/30 seconds"`` → Rate; ValueError otherwise."""
    match = _RATE.fullmatch(text)
    unit = _UNITS.get(match.group(3).lower()) if match else None
    if match is None or unit is None:
        raise ValueError(f"expected <count>/<period> such as 5/minute or 10/30 seconds, got {text!r}")
    count, multiple = int(match.group(1)), float(match.group(2) or 1)
    if count < 1 or multiple <= 0:
        raise ValueError(f"a rate needs a positive count and period, got {text!r}")
    return Rate(count=count, period=multiple * unit, text=text.strip())


@dataclass(frozen=True)
class RateLimits:
    """The configured rates (``RATE_LIMIT_*`` settings)."""

    global_ip: Rate        # every request from one client address
    login: Rate            # sign-in, per client address and, separately, per account
    register: Rate         # registration, per client address
    password_forgot: Rate  # password-reset mail, per client address
    generate: Rate         # POST /api/generate, per signed-in user
    label_verify: Rate     # POST /api/works/verify-label (decodes an uploaded image), per client address
    namespace: str         # Redis key prefix of the counters


@dataclass(frozen=True)
class Limit:
    """One limit applied to one identity: ``("login:account", rate, "alice")``."""

    name: str
    rate: Rate
    identity: str


class RateLimited(ServiceError):
    status, code, message = 429, "RATE_LIMITED", "Too many requests; try again later."

    def __init__(self, limit: Limit, retry_after: int) -> None:
        super().__init__(f"Too many requests ({limit.rate.text} for {limit.name}); "
                         f"try again in {retry_after} s.",
                         details={"limit": limit.rate.text, "scope": limit.name, "retryAfter": retry_after})
        self.retry_after = retry_after


def _seconds_up(microseconds: float) -> int:
    return max(1, math.ceil(microseconds / 1_000_000))


@dataclass
class _Tally:
    """Requests of one address counted here and not yet charged to Redis."""

    pending: int = 0
    budget: int = 0    # how many may gather before they are charged
    due: float = 0.0   # time.monotonic() by which they are charged at the latest


class RateLimiter:
    # Beyond this many blocked or counted addresses, expired entries are dropped.
    MAX_ADDRESSES = 100_000

    def __init__(self, client: redis.Redis, namespace: str) -> None:
        self.namespace = namespace
        self._script = client.register_script(_GCRA)
        self._count_script = client.register_script(_COUNT)
        self._blocked: dict[str, float] = {}  # key → time.monotonic() when it may pass again
        self._tallies: dict[str, _Tally] = {}
        self._lock = threading.Lock()

    def key(self, limit: Limit) -> str:
        return f"{self.namespace}:{limit.name}:{limit.identity}"

    def _run(self, limits: Sequence[Limit]) -> tuple[int, int, int]:
        args: list[int] = []
        for limit in limits:
            args += (limit.rate.interval_us, round(limit.rate.period * 1_000_000))
        refused, wait_us, next_wait_us = self._script(keys=[self.key(limit) for limit in limits], args=args)
        return int(refused), int(wait_us), int(next_wait_us)

    def hit(self, limits: Sequence[Limit]) -> None:
        """Charge one request to every limit, or raise RateLimited and charge none."""
        if not limits:
            return
        refused, wait_us, _ = self._run(limits)
        if refused:
            raise RateLimited(limits[refused - 1], retry_after=_seconds_up(wait_us))

    def check_known(self, limit: Limit) -> None:
        """Raise RateLimited if this process knows the limit is used up (no Redis call)."""
        until = self._blocked.get(self.key(limit))
        if until is not None:
            remaining = until - time.monotonic()
            if remaining > 0:
                raise RateLimited(limit, retry_after=_seconds_up(remaining * 1_000_000))

    def count(self, limit: Limit) -> None:
        """Count one answered request against the limit: charged to Redis now, or with the
        address's next batch while it is far from its allowance."""
        key, now = self.key(limit), time.monotonic()
        with self._lock:
            tally = self._tallies.get(key)
            if tally is None:
                if len(self._tallies) >= self.MAX_ADDRESSES:
                    self._tallies = {k: t for k, t in self._tallies.items() if t.pending}
                tally = self._tallies[key] = _Tally()
            tally.pending += 1
            if tally.pending <= tally.budget and now < tally.due:
                return
            charged, tally.pending = tally.pending, 0
        try:
            wait_us, admissible = self._count_script(
                keys=[key], args=[limit.rate.interval_us, round(limit.rate.period * 1_000_000), charged])
        except redis.RedisError:
            with self._lock:
                tally.pending += charged  # charged with the next request, when Redis may answer again
            raise
        with self._lock:
            tally.budget, tally.due = min(COUNT_BATCH, int(admissible) // 4), now + COUNT_BATCH_SECONDS
            if int(wait_us) > 0:
                if len(self._blocked) >= self.MAX_ADDRESSES:
                    self._blocked = {k: until for k, until in self._blocked.items() if until > now}
                self._blocked[key] = now + int(wait_us) / 1_000_000
            else:
                self._blocked.pop(key, None)

    def count_quietly(self, limit: Limit) -> None:
        """``count``, logging rather than raising when Redis cannot answer (the request has
        been answered; it is counted with the address's next one)."""
        try:
            self.count(limit)
        except redis.RedisError as exc:
            log.warning("rate limits unavailable, the request is not counted yet: %s", exc)


LOGIN_PATH = "/api/users/login"
REGISTER_PATH = "/api/users/register"
SSO_REGISTER_PATH = "/api/auth/sso/register"  # a new account made by single sign-on
SSO_EXCHANGE_PATH = "/api/auth/sso/exchange"  # a sign-in by single sign-on
PASSWORD_FORGOT_PATH = "/api/users/password/forgot"
GENERATE_PATH = "/api/generate"
LABEL_VERIFY_PATH = "/api/works/verify-label"
# Probes and scrapes are not clients: an orchestrator and Prometheus must always be able to ask.
UNLIMITED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
MAX_ACCOUNT_KEY = 254


def _account() -> str | None:
    """The account a sign-in names (``username`` in the JSON body, lower-cased), if any."""
    body = request.get_json(silent=True)
    name = body.get("username") if isinstance(body, dict) else None
    if not isinstance(name, str) or not name.strip():
        return None
    return name.strip().lower()[:MAX_ACCOUNT_KEY]


def request_limits(rates: RateLimits, service_token: str) -> list[Limit]:
    """The limits the current request counts against."""
    if request.path in UNLIMITED_PATHS:
        return []
    presented = request.headers.get(SERVICE_TOKEN_HEADER)
    if presented and same_secret(presented, service_token):
        return []  # another platform process (the gallery reading render outputs), not a client
    address = client_address()
    limits = [Limit("global:ip", rates.global_ip, address)]
    if request.method != "POST":
        return limits
    if request.path == LOGIN_PATH:
        limits.append(Limit("login:ip", rates.login, address))
        account = _account()
        if account is not None:
            limits.append(Limit("login:account", rates.login, account))
    elif request.path == SSO_EXCHANGE_PATH:
        limits.append(Limit("login:ip", rates.login, address))
    elif request.path in (REGISTER_PATH, SSO_REGISTER_PATH):
        limits.append(Limit("register:ip", rates.register, address))
    elif request.path == PASSWORD_FORGOT_PATH:
        limits.append(Limit("password-forgot:ip", rates.password_forgot, address))
    elif request.path == LABEL_VERIFY_PATH:
        limits.append(Limit("label-verify:ip", rates.label_verify, address))
    elif request.path == GENERATE_PATH:
        claims = optional_user(scope="generate")  # a bad token is a 401 here, as it would be in the route
        if claims is not None:
            limits.append(Limit("generate:user", rates.generate, str(claims.user_id)))
    return limits


def init_rate_limits(app: Flask, rates: RateLimits, client: redis.Redis, service_token: str) -> None:
    """Check every request against its limits before it is routed; 429 with Retry-After.

    When Redis cannot answer, a request that only counts against the global ceiling is let
    through (the site stays up; the outage is logged), while sign-in, registration,
    password-reset mail and generation are refused with 503: their limits guard against
    abuse, and generation needs Redis anyway.
    """
    limiter = RateLimiter(client, rates.namespace)
    app.extensions["gateway_rate_limiter"] = limiter

    def count_after_response(limit: Limit) -> None:
        after_response(lambda: limiter.count_quietly(limit))

    @app.before_request
    def _rate_limit() -> None:
        limits = request_limits(rates, service_token)
        if len(limits) == 1:
            limiter.check_known(limits[0])
            count_after_response(limits[0])
            return
        try:
            limiter.hit(limits)
        except redis.RedisError as exc:
            raise ServiceUnavailable("Request limits cannot be checked right now; try again shortly.",
                                     code="RATE_LIMIT_UNAVAILABLE") from exc

    @app.errorhandler(RateLimited)
    def _too_many(exc: RateLimited):
        body, status = error_response(exc.status, exc.code, exc.message, exc.details)
        body.headers["Retry-After"] = str(exc.retry_after)
        return body, status
