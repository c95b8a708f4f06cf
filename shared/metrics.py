"""Prometheus metrics: the mechanism every process shares (``prometheus_client``).

HTTP services answer ``GET /metrics`` on their own port (``init_flask_metrics``, bound by
``shared.web.init_service_app``): request count and latency by route rule (``/api/works/<id:work_id>``,
never the raw path, so a scan of ids cannot blow up the label set) and status. Under gunicorn
each worker process writes its samples to ``PROMETHEUS_MULTIPROC_DIR`` (set by
``deploy/gunicorn_conf.py``) and ``/metrics`` adds up every worker's files.

Background processes and render workers start ``serve_metrics()``: a small HTTP server on
``METRICS_PORT`` (the process table, ``deploy/processes.py``, gives each one). Domain metrics
are declared where their events happen; a gauge that is read from a store at scrape time
(queue depth, credits held) is a collector registered by the one process that owns it.

With ``METRICS_TOKEN`` set, ``/metrics`` answers only ``Authorization: Bearer <token>``
(Prometheus' ``authorization`` setting); the public gateway's ``/metrics`` is also kept off
the Ingress (``deploy/k8s``).
"""
from __future__ import annotations

import logging
import os
import time
from typing import Callable, Iterable

from flask import Flask, Response, g, request
from prometheus_client import (CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Gauge, Histogram,
                               generate_latest, start_http_server)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from shared.errors import error_response
from shared.secret_compare import same_secret

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Seconds: from a fast cached read to a slow proxied upload.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

HTTP_REQUESTS = Counter("http_requests_total", "HTTP requests answered, by route rule and status",
                        ("service", "method", "route", "status"))
HTTP_LATENCY = Histogram("http_request_duration_seconds", "Time to answer an HTTP request, by route rule",
                         ("service", "method", "route"), buckets=LATENCY_BUCKETS)


def multiprocess() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


def exposition() -> bytes:
    """The text Prometheus scrapes: every worker's samples under gunicorn, else this process's."""
    if multiprocess():
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        # Scrape-time collectors live in this process only; the multiprocess files lack them.
        for collector in _scrape_collectors:
            registry.register(collector)
        return generate_latest(registry)
    return generate_latest(REGISTRY)


_scrape_collectors: list[Collector] = []


def register_collector(collector: Collector) -> None:
    """A collector read at scrape time (queue depth, credits held), in whichever mode."""
    _scrape_collectors.append(collector)
    if not multiprocess():
        REGISTRY.register(collector)


def metrics_token() -> str:
    return os.environ.get("METRICS_TOKEN", "")


def authorized(header: str) -> bool:
    token = metrics_token()
    return not token or same_secret(header, f"Bearer {token}")


class RequestMetrics:
    """One service's request count and latency by route rule and status, for Flask's hooks
    and the WSGI fast paths in front of Flask alike. The label children are kept per
    (method, rule, status): looking them up through ``labels()`` every request costs more
    than the observation itself."""

    def __init__(self, service: str) -> None:
        self.service = service
        self._children: dict[tuple[str, str, int], tuple] = {}

    def observe(self, method: str, rule: str, status: int, started: float) -> None:
        """A request to ``rule`` answered ``status``; ``started`` is its ``time.perf_counter()``."""
        children = self._children.get((method, rule, status))
        if children is None:
            children = self._children[(method, rule, status)] = (
                HTTP_REQUESTS.labels(self.service, method, rule, str(status)),
                HTTP_LATENCY.labels(self.service, method, rule))
        children[0].inc()
        children[1].observe(time.perf_counter() - started)


def init_flask_metrics(app: Flask, service: str) -> None:
    """``GET /metrics`` and request count/latency for every route of ``app``."""
    request_metrics = RequestMetrics(service)

    @app.before_request
    def _start_timer():
        g.metrics_started = time.perf_counter()

    @app.after_request
    def _observe(response: Response) -> Response:
        started = g.get("metrics_started")
        if started is None or request.path == "/metrics":
            return response
        route = request.url_rule.rule if request.url_rule is not None else "unmatched"
        request_metrics.observe(request.method, route, response.status_code, started)
        return response

    @app.get("/metrics")
    def metrics():
        if not authorized(request.headers.get("Authorization", "")):
            return error_response(401, "METRICS_TOKEN_REQUIRED", "Metrics need the METRICS_TOKEN bearer.")
        return Response(exposition(), mimetype=CONTENT_TYPE_LATEST)


def serve_metrics(name: str, env: dict[str, str] | None = None) -> int | None:
    """Serve ``/metrics`` on ``METRICS_PORT`` (0 or unset: not served) from a background thread.
    Returns the port, or None."""
    env = os.environ if env is None else env
    raw = env.get("METRICS_PORT", "")
    port = int(raw) if raw.strip() else 0
    if not port:
        return None
    try:
        start_http_server(port, addr=env.get("METRICS_HOST", "0.0.0.0"))
    except OSError as exc:  # metrics are for watching; a taken port must not stop the process
        log.warning("%s: metrics not served on port %s: %s", name, port, exc)
        return None
    log.info("%s: metrics on port %s", name, port)
    return port


class GaugeCollector(Collector):
    """A labelled gauge whose samples ``read()`` fetches at scrape time; a failing read
    yields no samples (and is logged) rather than failing the scrape."""

    def __init__(self, name: str, documentation: str, labels: Iterable[str],
                 read: Callable[[], Iterable[tuple[tuple[str, ...], float]]]) -> None:
        self.name, self.documentation, self.labels, self.read = name, documentation, list(labels), read

    def describe(self):
        return [GaugeMetricFamily(self.name, self.documentation, labels=self.labels)]

    def collect(self):
        family = GaugeMetricFamily(self.name, self.documentation, labels=self.labels)
        try:
            for values, value in self.read():
                family.add_metric(list(values), value)
        except Exception as exc:  # the store is down: the gap shows on the dashboard, the scrape succeeds
            log.warning("metric %s not read: %s", self.name, exc)
        yield family


__all__ = ["Counter", "Gauge", "Histogram", "GaugeCollector", "RequestMetrics", "init_flask_metrics",
           "serve_metrics", "register_collector", "exposition"]
