"""Media files and the plain web page."""
from __future__ import annotations

from flask import Blueprint, Response, current_app, send_from_directory

from shared.config import Settings

# Media keys are content hashes: a key never names different bytes.
MEDIA_CACHE_CONTROL = "public, max-age=31536000, immutable"

bp = Blueprint("files", __name__)


def _settings() -> Settings:
    return current_app.config["SETTINGS"]


@bp.get("/media/<path:key>")
def media(key: str) -> Response:
    response = send_from_directory(_settings().media_dir, key)
    response.headers["Cache-Control"] = MEDIA_CACHE_CONTROL
    return response


@bp.get("/")
def index() -> Response:
    response = send_from_directory(_settings().web_root, "index.html")
    response.headers["Cache-Control"] = "no-cache"
    return response
