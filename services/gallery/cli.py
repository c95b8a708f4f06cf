"""Operator commands: ``flask --app services.gallery.app:create_app gallery <command>``."""
from __future__ import annotations

import click
from flask import current_app
from flask.cli import AppGroup

from services.gallery.seed import seed_demo
from shared.db import MAX_ID

gallery_cli = AppGroup("gallery", help="Gallery operations.")


@gallery_cli.command("seed-demo")
@click.option("--works", default=100_000, show_default=True, type=click.IntRange(1, 10_000_000))
@click.option("--users", default=10_000, show_default=True, type=click.IntRange(1, 10_000_000))
@click.option("--likes", default=1_000_000, show_default=True, type=click.IntRange(0, 100_000_000))
@click.option("--first-user-id", default=900_000_000, show_default=True, type=click.IntRange(1, MAX_ID),
              help="Synthetic author ids start here (far above real ones).")
@click.option("--seed", default=1, show_default=True, help="Random seed, for repeatable data.")
def seed_demo_command(works: int, users: int, likes: int, first_user_id: int, seed: int) -> None:
    """Fill the gallery tables with public demo works, tags and likes (bulk inserts)."""
    summary = seed_demo(current_app.extensions["db"], works=works, users=users, likes=likes,
                        first_user_id=first_user_id, seed=seed, echo=click.echo)
    current_app.extensions["gallery"].engagement.liked_sets.forget(range(first_user_id, first_user_id + users))
    click.echo(f"seeded {summary['works']} works, {summary['tags']} tags, {summary['likes']} likes "
               f"in {summary['seconds']:.1f} s")
