"""Media files, the web page, security headers, and the health and readiness probes."""
from __future__ import annotations

import io
import json
from urllib.parse import urlsplit

import pytest
from flask import Flask, jsonify
from PIL import Image, ImageChops

from services.render.catalog import catalog_key
from shared.labels import ImageLabel, label_png, load_label_config, read_label
from shared.storage import LocalStorage, content_key, make_storage
from tests.conftest import serve
from tests.gateway.conftest import build_app, close_app


@pytest.mark.parametrize("prefix", ["avatars", "previews"])
def test_public_media_is_served_with_an_immutable_cache(app, gateway_settings, prefix):
    """Avatars and model previews are public: no signature, long cache lifetimes."""
    data = b"\x89PNG\r\n\x1a\nfake " + prefix.encode()
    key = LocalStorage(gateway_settings.media_dir).put(content_key(data, "png", prefix), data)
    with app.test_client().get(f"/media/{key}") as response:
        assert response.status_code == 200
        assert response.data == data
        assert response.headers["Content-Type"] == "image/png"
        assert response.headers["Cache-Control"] == "public, max-age=604800, immutable"


def test_private_media_needs_its_signature(app, gateway_settings):
    data = b"\x89PNG\r\n\x1a\nprivate"
    storage = make_storage(gateway_settings)
    key = storage.put(content_key(data, "png", "images"), data)
    with app.test_client() as client:
        with client.get(f"/media/{key}") as unsigned:
            assert unsigned.status_code == 404
        with client.get(storage.signed_url(key)) as signed:
            assert signed.status_code == 200 and signed.data == data
            assert signed.headers["Cache-Control"].startswith("private, max-age=")


def test_a_generated_image_downloads_with_its_labels(app, gateway_settings):
    """``?download=1`` on a signed output URL: the visible label drawn, the implicit one kept."""
    storage = make_storage(gateway_settings)
    secret = load_label_config(gateway_settings).secret
    picture = Image.new("RGB", (300, 200), (20, 90, 160))
    buffer = io.BytesIO()
    picture.save(buffer, "PNG")
    data = label_png(buffer.getvalue(), ImageLabel("AIGC 创意工作流平台", "out-1", "job-1", "2026-12-04T10:00:00Z"),
                     secret)
    key = storage.put(content_key(data, "png", "images"), data)
    with app.test_client() as client:
        with client.get(storage.signed_url(key) + "&download=1") as download:
            assert download.status_code == 200 and download.mimetype == "image/png"
            assert download.headers["Content-Disposition"].startswith("attachment;")
            found = read_label(download.data, secret)
            assert found.authentic and found.produce_id == "out-1" and found.job_id == "job-1"
            with Image.open(io.BytesIO(download.data)) as labelled:
                changed = ImageChops.difference(labelled.convert("RGB"), picture).getbbox()
            assert changed is not None and changed[1] > 100  # drawn in the lower half
        with client.get(f"/media/{key}?download=1") as unsigned:
            assert unsigned.status_code == 404  # the signature is still needed
        with client.get(storage.signed_url(key)) as shown:
            assert shown.data == data  # what the page shows is the stored file


@pytest.mark.parametrize(("exp", "sig"), [("%C2%B2", "0"), ("%D9%A3", "0"), ("123", "%C3%A9"), ("9" * 13, "0")])
def test_a_malformed_media_signature_is_403_never_500(app, gateway_settings, exp, sig):
    data = b"\x89PNG\r\n\x1a\nodd"
    key = make_storage(gateway_settings).put(content_key(data, "png", "images"), data)
    response = app.test_client().get(f"/media/{key}?exp={exp}&sig={sig}")
    assert (response.status_code, response.get_json()["error"]["code"]) == (403, "MEDIA_LINK_INVALID")


@pytest.mark.parametrize("path", [
    "/media/../secret.txt",
    "/media/%2e%2e/secret.txt",
    "/media/..%2fsecret.txt",
    "/media/images/%2e%2e/%2e%2e/secret.txt",
    "/media//etc/passwd",
    "/media/missing.png",
])
def test_media_traversal_and_missing_files_are_404(client, gateway_settings, path):
    gateway_settings.media_dir.mkdir(parents=True, exist_ok=True)
    (gateway_settings.data_dir / "secret.txt").write_text("do not serve")
    with client.get(path, follow_redirects=True) as response:
        assert response.status_code == 404
        assert b"do not serve" not in response.data


def test_web_client_files_and_client_side_routes(client):
    with client.get("/") as page:
        assert page.status_code == 200 and page.mimetype == "text/html"
        assert page.headers["Cache-Control"] == "no-cache"
        assert b"/assets/index-abc123.js" in page.data
    for route in ("/gallery", "/works/7", "/u/alice", "/profile/credits"):
        with client.get(route) as page:
            assert page.status_code == 200 and b"/assets/index-abc123.js" in page.data
    with client.get("/assets/index-abc123.js") as script:
        assert script.status_code == 200 and "javascript" in script.mimetype
        assert script.headers["Cache-Control"] == "public, max-age=31536000, immutable"


def test_web_client_serves_nothing_outside_its_folder(client, web_root):
    (web_root.parent / "secret.txt").write_text("do not serve")
    for path in ("/../secret.txt", "/assets/../../secret.txt", "/%2e%2e/secret.txt"):
        with client.get(path) as response:
            assert b"do not serve" not in response.data


@pytest.mark.parametrize("path", ["/api/nothing", "/internal/nothing", "/media", "/healthz/x"])
def test_reserved_prefixes_never_fall_back_to_the_page(client, path):
    with client.get(path) as response:
        assert response.status_code == 404
        assert response.get_json()["success"] is False


@pytest.mark.parametrize("path", ["/", "/api/health", "/api/works/gallery", "/api/x"])
def test_security_headers_on_every_response(client, path):
    with client.get(path) as response:
        headers = response.headers
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "strict-origin-when-cross-origin"
    assert headers["X-Frame-Options"] == "DENY"
    csp = headers["Content-Security-Policy"]
    for directive in ("default-src 'self'", "img-src 'self' data: blob:", "connect-src 'self' ws: wss:",
                      "frame-ancestors 'none'"):
        assert directive in csp


@pytest.fixture
def live_worker(app, unique):
    redis = app.extensions["redis"]
    key = catalog_key(f"test-{unique}")
    redis.set(key, json.dumps({"workerId": f"test-{unique}", "checkpoints": ["demo.safetensors"]}), ex=30)
    yield
    redis.delete(key)


def test_health_reports_components_and_the_demo_notice(gateway_env, live_worker):
    gateway_env["DEMO_BACKEND"] = "true"
    app = build_app(gateway_env)
    try:
        response = app.test_client().get("/api/health")
    finally:
        close_app(app)
    assert response.status_code == 200
    health = response.get_json()["data"]
    assert health["status"] == "ok"
    assert health["demoBackend"] is True
    assert health["notice"].startswith("Demo backend:")
    components = health["components"]
    assert {name: components[name] for name in ("auth", "credits", "gallery", "redis")} == {
        "auth": "ok", "credits": "ok", "gallery": "ok", "redis": "ok"}
    assert components["renderWorkers"] >= 1


def test_health_is_degraded_and_readyz_fails_when_a_service_is_down(gateway_env, closed_url, live_worker):
    gateway_env["GALLERY_URL"] = closed_url
    app = build_app(gateway_env)
    try:
        client = app.test_client()
        health = client.get("/api/health")
        ready = client.get("/readyz")
    finally:
        close_app(app)
    assert health.status_code == 200
    data = health.get_json()["data"]
    assert data["status"] == "degraded"
    assert data["demoBackend"] is False
    assert data["notice"] is None
    assert data["components"]["gallery"] == "down"
    assert data["components"]["auth"] == "ok"
    assert ready.status_code == 503
    assert ready.get_json()["error"]["details"]["gallery"].startswith("down")


def test_readyz_is_ready_when_every_dependency_answers(client, live_worker):
    response = client.get("/readyz")
    assert response.status_code == 200
    components = response.get_json()["data"]["components"]
    workers = components.pop("renderWorkers")
    assert components == {"auth": "ok", "credits": "ok", "gallery": "ok", "redis": "ok", "renderDatabase": "ok"}
    assert isinstance(workers, int) and workers >= 1


def test_readyz_reports_no_render_worker_without_failing(client, redis_url):
    from shared.events import redis_client
    from services.render.catalog import read_live_catalogs
    probe = redis_client(redis_url)
    live = len(read_live_catalogs(probe))
    probe.close()
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.get_json()["data"]["components"]["renderWorkers"] == live


def _readyz_stand_in(database: str, redis: str):
    """A service whose /readyz reports its database and Redis as given (503 if either is down)."""
    app = Flask(f"readyz_{database}_{redis}")

    @app.get("/readyz")
    def readyz():
        components = {"database": database, "redis": redis}
        if "ok" == database == redis:
            return jsonify({"success": True, "data": {"status": "ready", "components": components}})
        return jsonify({"success": False, "error": {"code": "NOT_READY", "message": "x", "details": components}}), 503

    return serve(app)


def test_health_with_redis_down_says_down_and_still_tells_which_services_run(gateway_env, closed_url):
    running = _readyz_stand_in("ok", "down: ConnectionError")
    broken = _readyz_stand_in("down: OperationalError", "down: ConnectionError")
    gateway_env.update(AUTH_URL=running.url, CREDITS_URL=running.url, GALLERY_URL=broken.url,
                       REDIS_URL=f"redis://127.0.0.1:{urlsplit(closed_url).port}/0")
    app = build_app(gateway_env)
    try:
        response = app.test_client().get("/api/health")
    finally:
        close_app(app)
        running.stop()
        broken.stop()
    assert response.status_code == 200
    data = response.get_json()["data"]
    assert data["status"] == "down"
    components = data["components"]
    assert {name: components[name] for name in ("auth", "credits", "gallery", "redis")} == {
        "auth": "ok", "credits": "ok", "gallery": "down", "redis": "down"}
