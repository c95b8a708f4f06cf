"""Who may fetch a work's files through the gateway's /media: the access matrix.

The gateway's media blueprint runs in a small app of its own here, asking a real gallery
(served over HTTP in a thread) whether a key is public.
"""
from __future__ import annotations

import threading
import time
from urllib.parse import parse_qs, urlsplit

import pytest
from flask import Flask
from werkzeug.serving import make_server

from services.gateway import files
from shared.config import load_settings
from shared.storage import content_key
from shared.web import init_service_app


@pytest.fixture
def gateway(app, settings_env):
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    settings = load_settings({**settings_env, "GALLERY_URL": f"http://127.0.0.1:{server.server_port}"})
    gateway_app = Flask("gateway_media")
    init_service_app(gateway_app, settings, internal=False)
    gateway_app.register_blueprint(files.bp)
    yield gateway_app.test_client()
    server.shutdown()
    thread.join(timeout=10)


def _fetch(client, url: str):
    """GET and read the whole body, closing the file the response streams from."""
    response = client.get(url, follow_redirects=True)
    response.get_data()
    response.close()
    return response


def test_access_matrix(make_user, save_work, gateway, app, anonymous):
    alice, bob = make_user(), make_user()
    public = save_work(alice)
    private = save_work(alice, isPublic=False)

    # Public work: a plain URL works for anyone, with a long shared cache.
    response = _fetch(gateway, public["imageUrl"])
    assert response.status_code == 200 and response.mimetype == "image/png"
    assert response.headers["Cache-Control"] == files.PUBLIC_CACHE_CONTROL
    assert _fetch(gateway, public["thumbnailUrl"]).status_code == 200

    # Private work: the owner's API answer carries signed URLs; nobody else gets one.
    owner_view = alice.get(f"/api/works/{private['id']}").get_json()["data"]["work"]
    signed = _fetch(gateway, owner_view["imageUrl"])
    assert signed.status_code == 200 and signed.headers["Cache-Control"].startswith("private, max-age=")
    assert bob.get(f"/api/works/{private['id']}").status_code == 404
    assert anonymous.get(f"/api/works/{private['id']}").status_code == 404
    plain = owner_view["imageUrl"].split("?")[0]
    assert _fetch(gateway, plain).status_code == 404  # a guessed (or leaked) key alone is worth nothing

    # Tampered or expired signatures.
    query = parse_qs(urlsplit(owner_view["imageUrl"]).query)
    tampered = f"{plain}?exp={query['exp'][0]}&sig={'0' * 32}"
    assert _fetch(gateway, tampered).status_code == 403
    storage = app.extensions["gallery"].files.storage
    key = plain.removeprefix("/media/")
    expired = storage.signed_url(key, now=time.time() - 3 * storage.signer.ttl)
    response = _fetch(gateway, expired)
    assert response.status_code == 403
    assert response.get_json()["error"]["code"] == "MEDIA_LINK_EXPIRED"
    other_key = public["imageUrl"].removeprefix("/media/")
    exp, sig = query["exp"][0], query["sig"][0]
    assert _fetch(gateway, f"/media/{other_key}?exp={exp}&sig={sig}").status_code == 403  # not this key's

    # Unpublishing takes the plain URL away (after the gateway's short cache).
    alice.put(f"/api/works/{public['id']}", json={"isPublic": False})
    gateway.application.extensions["media_public"]._cache.clear()
    assert _fetch(gateway, public["imageUrl"]).status_code == 404


def test_outputs_and_avatars(make_user, add_output, fake_gateway, gateway, app):
    alice = make_user()
    output = fake_gateway.outputs[add_output(alice.user_id)]
    storage = app.extensions["gallery"].files.storage
    assert _fetch(gateway, f"/media/{output['imageKey']}").status_code == 404  # unsaved output: signed only
    assert _fetch(gateway, storage.signed_url(output["imageKey"])).status_code == 200
    avatar = storage.put(content_key(b"RIFF....WEBP", "webp", "avatars"), b"RIFF....WEBP")
    assert _fetch(gateway, f"/media/{avatar}").status_code == 200


@pytest.mark.parametrize("path", ["/media/../secret.txt", "/media/%2e%2e/secret.txt", "/media/images/x.png",
                                  "/media//etc/passwd", "/media/works/images/aa/bb/" + "0" * 64 + ".png"])
def test_malformed_or_missing_keys_are_404(gateway, path):
    assert _fetch(gateway, path).status_code == 404
