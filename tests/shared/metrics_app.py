"""A tiny service app for the metrics tests: ``init_service_app`` and one route with an id."""
from __future__ import annotations

from flask import Flask, jsonify

from shared.config import load_settings
from shared.tokens import ensure_dev_keys
from shared.web import init_service_app


def create_app() -> Flask:
    settings = load_settings()
    ensure_dev_keys(settings)
    app = Flask("tests.metrics_app")
    init_service_app(app, settings, internal=True)

    @app.get("/internal/things/<id:thing_id>")
    def thing(thing_id: int):
        return jsonify({"success": True, "data": {"id": thing_id}})

    return app
