"""The config given to create_app is the one the routes use (instead of the environment's)."""
from __future__ import annotations

import pytest

from services.gallery.app import create_app
from services.gallery.config import GalleryConfig
from tests.gallery.conftest import close_app


@pytest.fixture
def app(settings):
    app = create_app(settings, GalleryConfig(featured_likes=1))
    yield app
    close_app(app)


def test_a_config_passed_to_create_app_decides_what_is_featured(make_user, save_work):
    alice, bob = make_user(), make_user()
    work = save_work(alice)
    assert work["featured"] is False
    assert bob.put(f"/api/works/{work['id']}/like").status_code == 200
    # One like is enough here; the environment's default (GALLERY_FEATURED_LIKES) is 10.
    assert alice.get(f"/api/works/{work['id']}").get_json()["data"]["work"]["featured"] is True
