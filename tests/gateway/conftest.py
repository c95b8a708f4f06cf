"""Fixtures for the gateway: tiny real upstream services and a gateway pointed at them."""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Iterator

import pytest
from flask import Flask, Response, jsonify, request
from werkzeug.serving import BaseWSGIServer, make_server

from services.gateway.app import create_app
from shared.config import Settings, load_settings
from shared.embedded import free_port
from shared.tokens import ensure_dev_keys


@dataclass
class RunningServer:
    server: BaseWSGIServer
    thread: threading.Thread

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def serve(app: Flask) -> RunningServer:
    """Run ``app`` on a free local port in a background thread."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return RunningServer(server, thread)


def echo_app(name: str) -> Flask:
    """An upstream that answers with what it received, or with the status in ``?status=``."""
    app = Flask(f"echo_{name}")

    @app.get("/readyz")
    def readyz():
        return jsonify({"success": True, "data": {"status": "ready"}})

    @app.route("/", defaults={"path": ""}, methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    @app.route("/<path:path>", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    def echo(path: str):
        body = {
            "service": name,
            "method": request.method,
            "path": request.path,
            "query": request.query_string.decode(),
            "headers": dict(request.headers),
            "body": request.get_data(as_text=True),
        }
        response = jsonify(body)
        response.status_code = int(request.args.get("status", 200))
        response.headers["X-Upstream"] = name
        response.headers["Keep-Alive"] = "timeout=5"
        response.headers["Proxy-Authenticate"] = "Basic"
        return response

    @app.get("/api/users/plain")
    def plain():
        return Response("not json", status=418, content_type="text/plain; charset=utf-8")

    return app


@pytest.fixture(scope="module")
def upstreams() -> Iterator[dict[str, RunningServer]]:
    servers = {name: serve(echo_app(name)) for name in ("auth", "credits", "gallery")}
    yield servers
    for server in servers.values():
        server.stop()


@pytest.fixture
def gateway_env(settings_env, upstreams) -> dict[str, str]:
    settings_env.update({
        "AUTH_URL": upstreams["auth"].url,
        "CREDITS_URL": upstreams["credits"].url,
        "GALLERY_URL": upstreams["gallery"].url,
    })
    return settings_env


def build_settings(env: dict[str, str]) -> Settings:
    loaded = load_settings(env)
    loaded.data_dir.mkdir(parents=True, exist_ok=True)
    ensure_dev_keys(loaded)
    return loaded


@pytest.fixture
def gateway_settings(gateway_env) -> Settings:
    return build_settings(gateway_env)


@pytest.fixture
def app(gateway_settings) -> Iterator[Flask]:
    app = create_app(gateway_settings)
    yield app
    close_app(app)


def close_app(app: Flask) -> None:
    app.extensions["gateway_redis"].close()
    app.extensions["gateway_proxy"].session.close()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def closed_url() -> str:
    """A local address nobody listens on."""
    return f"http://127.0.0.1:{free_port()}"
