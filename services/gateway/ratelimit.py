"""Rate limits kept in Redis, shared by every gateway process.

Each limit is a generic cell rate (GCRA): ``5/minute`` admits a burst of 5, then one more
every 12 seconds. A limit costs one Redis key holding its "theoretical arrival time".
All the limits that apply to one request are checked and charged in one atomic script
call: if any refuses, none is charged, so a refused sign-in does not also use up the
account's allowance. Redis's clock is the only clock, so gateways agree.

The global per-address ceiling applies to every request, so it stays off the hot path:
a request that counts only against it is checked against what this process already
knows (addresses it has seen run out, and until when), and charged to Redis after its
response has been sent. The charge that uses up an address's allowance blocks that
address here until Redis says the next request is allowed. So each gateway process
lets through at most the requests already in flight when the allowance ran out.
Sign-in, registration (also by single sign-on), password-reset mail and generation are
checked synchronously.
"""
from __future__ import annotations

import hmac
import logging
import math
import re
import time
from dataclasses import dataclass
from typing import Sequence

import redis
from flask import Flask, request

from services.gateway.clientaddr import client_address
from shared.errors import ServiceError, ServiceUnavailable, error_response
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


class RateLimiter:
    # Beyond this many blocked addresses, expired entries are dropped.
    MAX_BLOCKED = 100_000

    def __init__(self, client: redis.Redis, namespace: str) -> None:
        self.namespace = namespace
        self._script = client.register_script(_GCRA)
        self._blocked: dict[str, float] = {}  # key → time.monotonic() when it may pass again

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

    def charge(self, limit: Limit) -> None:
        """Charge one request to the limit in Redis and remember here if it is used up."""
        refused, wait_us, next_wait_us = self._run([limit])
        wait = wait_us if refused else next_wait_us
        key = self.key(limit)
        if wait > 0:
            if len(self._blocked) >= self.MAX_BLOCKED:
                now = time.monotonic()
                self._blocked = {k: until for k, until in self._blocked.items() if until > now}
            self._blocked[key] = time.monotonic() + wait / 1_000_000
        else:
            self._blocked.pop(key, None)


LOGIN_PATH = "/api/users/login"
REGISTER_PATH = "/api/users/register"
SSO_REGISTER_PATH = "/api/auth/sso/register"  # a new account made by single sign-on
SSO_EXCHANGE_PATH = "/api/auth/sso/exchange"  # a sign-in by single sign-on
PASSWORD_FORGOT_PATH = "/api/users/password/forgot"
GENERATE_PATH = "/api/generate"
# Probes are not clients: an orchestrator must always be able to ask.
UNLIMITED_PATHS = frozenset({"/healthz", "/readyz"})
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
    if presented and hmac.compare_digest(presented, service_token):
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
    elif request.path == GENERATE_PATH:
        claims = optional_user()  # a bad token is a 401 here, as it would be in the route
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

    def charge_after_response(limit: Limit) -> None:
        def _charge() -> None:
            try:
                limiter.charge(limit)
            except redis.RedisError as exc:
                log.warning("rate limits unavailable, the request was not counted: %s", exc)

        after_response(_charge)

    @app.before_request
    def _rate_limit() -> None:
        limits = request_limits(rates, service_token)
        if len(limits) == 1:
            limiter.check_known(limits[0])
            charge_after_response(limits[0])
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
