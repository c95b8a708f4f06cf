"""Alembic migrations, one history per service.

All services share one Alembic environment (``shared/alembic``); each keeps its own
revisions in ``services/<name>/migrations`` and its own version table, so services
may live in one database or in separate ones.

    python -m shared.migrate                 # upgrade every service to head
    python -m shared.migrate revision gallery -m "add reports"   # autogenerate
"""
from __future__ import annotations

import argparse
import importlib

from alembic import command
from alembic.config import Config

from shared.config import PROJECT_ROOT, Settings, load_settings

SERVICES = ("auth", "credits", "gallery", "render", "integrations", "safety")
# The render tables' history was begun when they lived in the worker's package; its version
# table keeps that name, so existing databases do not replay their history.
VERSION_TABLES = {"render": "alembic_version_render_worker"}


def database_url(settings: Settings, service: str) -> str:
    return {
        "auth": settings.auth_database_url,
        "credits": settings.credits_database_url,
        "gallery": settings.gallery_database_url,
        "render": settings.render_database_url,
        "integrations": settings.integrations_database_url,
        "safety": settings.safety_database_url,
    }[service]


def alembic_config(service: str, url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(PROJECT_ROOT / "shared" / "alembic"))
    config.set_main_option("path_separator", "os")
    config.set_main_option("version_locations", str(PROJECT_ROOT / "services" / service / "migrations"))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.set_main_option("version_table", VERSION_TABLES.get(service, f"alembic_version_{service}"))
    config.attributes["target_metadata"] = importlib.import_module(f"services.{service}.models").Base.metadata
    return config


def upgrade(service: str, url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(service, url), revision)


def upgrade_all(settings: Settings) -> None:
    for service in SERVICES:
        upgrade(service, database_url(settings, service))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("upgrade", help="apply every service's migrations (default)")
    rev = sub.add_parser("revision", help="autogenerate a revision for one service")
    rev.add_argument("service", choices=SERVICES)
    rev.add_argument("-m", "--message", required=True)
    args = parser.parse_args()
    settings = load_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if args.command == "revision":
        config = alembic_config(args.service, database_url(settings, args.service))
        command.revision(config, message=args.message, autogenerate=True)
    else:
        upgrade_all(settings)


if __name__ == "__main__":
    main()
