"""The gallery service app: ``gunicorn 'services.gallery.app:create_app()'``."""
from __future__ import annotations

from flask import Flask

from shared.config import Settings, load_settings
from shared.db import Database
from shared.events import EventBus, redis_client
from shared.labels import load_label_config
from shared.storage import make_storage
from shared.web import init_service_app
from services.auth.client import AuthClient
from services.gallery import api
from services.gallery.authors import AuthorDirectory
from services.gallery.cli import gallery_cli
from services.gallery.config import GalleryConfig, load_config
from services.gallery.engagement import Engagement
from services.gallery.files import WorkFiles
from services.gallery.labels import WorkLabels
from services.gallery.liked import LikedSets
from services.gallery.listing import WorkListing
from services.gallery.moderation import Moderation
from services.gallery.notifications import Notifications
from services.gallery.schemas import WorkPresenter
from services.gallery.service import GalleryServices, WorksService
from services.gallery.review import ReviewPolicy
from services.gateway.client import EdgeCacheClient
from services.safety.client import ContentFilter
from services.render.client import RenderClient


def create_app(settings: Settings | None = None, config: GalleryConfig | None = None) -> Flask:
    settings = settings or load_settings()
    config = config or load_config(settings)
    app = Flask(__name__, static_folder=None)
    db = Database(settings.gallery_database_url)
    redis = redis_client(settings.redis_url)
    app.extensions["db"] = db
    app.extensions["redis"] = redis  # shared.tokens checks revoked tokens with it
    files = WorkFiles(db, make_storage(settings))
    authors = AuthorDirectory(AuthClient(settings.auth_url, settings.service_token, timeout=2.0),
                              config.author_cache_seconds)
    presenter = WorkPresenter(files, authors, config.featured_likes)
    notifications = Notifications(db, EventBus(redis))
    labels = WorkLabels(db, load_label_config(settings))
    # told when what the public sees changes, and given the works' counters
    edge_cache = EdgeCacheClient(redis, settings.edge_cache_namespace, settings.edge_detail_seconds)
    review = ReviewPolicy(config.review_mode, ContentFilter.from_settings(settings, redis))
    liked_sets = LikedSets(redis)  # each user's liked works, read by the gateway
    app.extensions["gallery"] = GalleryServices(
        works=WorksService(db, RenderClient(settings.render_url, settings.service_token), files, authors, presenter,
                           edge_cache, review, liked_sets),
        listing=WorkListing(db, presenter, config.timezone),
        engagement=Engagement(db, files, labels, notifications, config.view_window, config.download_window, review,
                              liked_sets, edge_cache, config.featured_likes),
        moderation=Moderation(db, presenter, notifications, edge_cache, review),
        notifications=notifications,
        files=files,
        labels=labels)

    init_service_app(app, settings, internal=True, ready_checks={"database": db.ping})
    app.register_blueprint(api.bp)
    app.cli.add_command(gallery_cli)
    return app
