"""Media files and the plain web page.

Who may fetch ``/media/<key>`` (keys are content hashes, so knowing one proves nothing):
- a URL signed by a service (``?exp=&sig=``, see ``shared.storage.MediaSigner``) until it
  expires: private works, hidden works and unsaved render outputs, for their owner;
- without a signature, avatars (``avatars/``), model previews (``previews/``) and the files
  of listed gallery works (never a ``quarantine/`` key: a flagged image kept for moderators). The
  gallery answers ``GET /internal/media/<key>/access``; the answer is cached here for
  ``ACCESS_CACHE_SECONDS``, so unpublishing takes effect within that time.
Everything else is a 404, the same as a missing file.

``?download=1`` on a generated image (``images/…png``, ``works/images/…png``) answers it as an
attachment with the visible AI-content label drawn on it (``CONTENT_LABEL_VISIBLE``) and its
implicit label kept (``shared.labels``): the web client's "download original" links use it.
"""
from __future__ import annotations

import mimetypes
import threading
import time

from flask import Blueprint, Response, current_app, request, send_file, send_from_directory
from flask.blueprints import BlueprintSetupState

from services.gallery.client import GalleryClient
from shared.config import Settings
from shared.errors import Forbidden, NotFound, ServiceError, ServiceUnavailable
from shared.labels import download_copy, load_label_config
from shared.offload import run_blocking
from shared.storage import (QUARANTINE_PREFIX, SignatureExpired, SignatureInvalid, Storage, StorageError, is_valid_key,
                            make_storage)

PUBLIC_CACHE_CONTROL = "public, max-age=604800, immutable"
PUBLIC_PREFIXES = ("avatars/", "previews/")
ACCESS_CACHE_SECONDS = 30
ACCESS_CACHE_MAX = 100_000
GENERATED_IMAGES = ("images/", "works/images/")

bp = Blueprint("files", __name__)


class PublicMedia:
    """Asks the gallery whether a key belongs to a listed work, with a short in-process cache.
    When the gallery cannot answer, the key is treated as not public (fail closed)."""

    def __init__(self, gallery: GalleryClient) -> None:
        self.gallery = gallery
        self._cache: dict[str, tuple[float, bool]] = {}
        self._lock = threading.Lock()

    def is_public(self, key: str) -> bool:
        if key.startswith(PUBLIC_PREFIXES):
            return True
        if key.startswith(QUARANTINE_PREFIX):
            return False
        now = time.monotonic()
        cached = self._cache.get(key)
        if cached and cached[0] > now:
            return cached[1]
        try:
            public = self.gallery.media_is_public(key)
        except (ServiceError, KeyError, TypeError):
            return False
        with self._lock:
            if len(self._cache) >= ACCESS_CACHE_MAX:
                self._cache.clear()
            self._cache[key] = (now + ACCESS_CACHE_SECONDS, public)
        return public


@bp.record_once
def _setup(state: BlueprintSetupState) -> None:
    settings: Settings = state.app.config["SETTINGS"]
    state.app.extensions["media_storage"] = make_storage(settings)
    state.app.extensions["media_labels"] = load_label_config(settings)
    state.app.extensions["media_public"] = PublicMedia(GalleryClient(settings.gallery_url, settings.service_token,
                                                                    timeout=(1.0, 3.0)))


def _settings() -> Settings:
    return current_app.config["SETTINGS"]


def _cache_control(storage: Storage, key: str) -> str:
    expires, signature = request.args.get("exp"), request.args.get("sig")
    if expires is not None or signature is not None:
        try:
            remaining = storage.signer.verify(key, expires or "", signature or "")
        except SignatureExpired:
            raise Forbidden("This media link has expired; reload the page for a fresh one.",
                            code="MEDIA_LINK_EXPIRED") from None
        except SignatureInvalid:
            raise Forbidden("This media link is not valid.", code="MEDIA_LINK_INVALID") from None
        return f"private, max-age={remaining}"
    if current_app.extensions["media_public"].is_public(key):
        return PUBLIC_CACHE_CONTROL
    raise NotFound("No such file.", code="MEDIA_NOT_FOUND")


@bp.get("/media/<path:key>")
def media(key: str) -> Response:
    if not is_valid_key(key):
        raise NotFound("No such file.", code="MEDIA_NOT_FOUND")
    storage: Storage = current_app.extensions["media_storage"]
    cache_control = _cache_control(storage, key)
    if request.args.get("download") == "1" and key.startswith(GENERATED_IMAGES) and key.endswith(".png"):
        return _labelled_download(storage, key)
    path = storage.local_path(key)
    if path is not None:
        if not path.is_file():
            raise NotFound("No such file.", code="MEDIA_NOT_FOUND")
        response = send_file(path, mimetype=mimetypes.guess_type(key)[0], conditional=True, etag=True)
    else:
        if not storage.exists(key):
            raise NotFound("No such file.", code="MEDIA_NOT_FOUND")
        response = Response(storage.iter_chunks(key), mimetype=mimetypes.guess_type(key)[0])
    response.headers["Cache-Control"] = cache_control
    return response


def _labelled_download(storage: Storage, key: str) -> Response:
    try:
        data = storage.read(key)
    except FileNotFoundError:
        raise NotFound("No such file.", code="MEDIA_NOT_FOUND") from None
    except (StorageError, OSError) as exc:
        raise ServiceUnavailable("The file cannot be read right now.", code="STORAGE_UNAVAILABLE") from exc
    labels = current_app.extensions["media_labels"]
    try:
        data = run_blocking(download_copy, data, labels, None, labels.visible)  # Pillow, off the gevent hub
    except (OSError, SyntaxError, ValueError) as exc:
        current_app.logger.error("media %s cannot be labelled (%s); handing it out as stored", key, exc)
    name = key.rsplit("/", 1)[-1]
    return Response(data, mimetype="image/png", headers={
        "Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "private, no-store"})


# Paths the web client never owns: an unknown one is a JSON 404, not the app's page.
NOT_CLIENT_ROUTES = ("api", "media", "internal", "ws", "healthz", "readyz", "metrics")


@bp.get("/", defaults={"path": ""})
@bp.get("/<path:path>")
def web_client(path: str) -> Response:
    """The built web client: its files, and index.html for every client-side route."""
    if path.split("/", 1)[0] in NOT_CLIENT_ROUTES:
        raise NotFound("Not found.")
    web_root = _settings().web_root
    if path and (web_root / path).is_file():
        response = send_from_directory(web_root, path)
        if path.startswith("assets/"):  # Vite names these by content hash
            response.headers["Cache-Control"] = "public, max-age=31536000, immutable"
        return response
    response = send_from_directory(web_root, "index.html")
    response.headers["Cache-Control"] = "no-cache"
    return response
