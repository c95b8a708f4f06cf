"""Operator commands: ``flask --app services.gallery.app:create_app gallery <command>``."""
from __future__ import annotations

import os
import socket
import threading

import click
from flask import current_app
from flask.cli import AppGroup

from shared.events import redis_client

from services.gallery import platform_events
from services.gallery.seed import seed_demo

gallery_cli = AppGroup("gallery", help="Gallery operations.")


@gallery_cli.command("consume-events")
@click.option("--consumer", default=lambda: f"{socket.gethostname()}-{os.getpid()}",
              help="Consumer name inside the 'gallery' group.")
def consume_events(consumer: str) -> None:
    """Apply platform announcements (user.deleted) until interrupted."""
    settings = current_app.config["SETTINGS"]
    stop = threading.Event()
    click.echo(f"consuming {platform_events.STREAM} as {platform_events.GROUP}/{consumer}")
    try:
        platform_events.consume_forever(current_app.extensions["gallery"].works, redis_client(settings.redis_url),
                                        consumer, stop)
    except KeyboardInterrupt:
        stop.set()


@gallery_cli.command("seed-demo")
@click.option("--works", default=100_000, show_default=True, type=click.IntRange(1, 10_000_000))
@click.option("--users", default=10_000, show_default=True, type=click.IntRange(1, 10_000_000))
@click.option("--likes", default=1_000_000, show_default=True, type=click.IntRange(0, 100_000_000))
@click.option("--first-user-id", default=900_000_000, show_default=True, type=click.IntRange(1, 2**31 - 1),
              help="Synthetic author ids start here (far above real ones).")
@click.option("--seed", default=1, show_default=True, help="Random seed, for repeatable data.")
def seed_demo_command(works: int, users: int, likes: int, first_user_id: int, seed: int) -> None:
    """Fill the gallery tables with public demo works, tags and likes (bulk inserts)."""
    summary = seed_demo(current_app.extensions["db"], works=works, users=users, likes=likes,
                        first_user_id=first_user_id, seed=seed, echo=click.echo)
    click.echo(f"seeded {summary['works']} works, {summary['tags']} tags, {summary['likes']} likes "
               f"in {summary['seconds']:.1f} s")
