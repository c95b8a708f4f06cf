"""Operator commands: ``flask --app services.integrations.app:create_app integrations <command>``."""
from __future__ import annotations

import click
from flask import current_app
from flask.cli import AppGroup

integrations_cli = AppGroup("integrations", help="Service accounts, the queue API and webhooks.")


@integrations_cli.command("dead-letters")
def dead_letters_command() -> None:
    """Count the queue API's dead letters by reason and show the latest."""
    report = current_app.extensions["integrations_requests"].dead_letters(1, 10)
    click.echo(f"{report['total']} dead letters")
    for reason, count in sorted(report["counts"].items()):
        click.echo(f"  {reason:<16} {count}")
    for item in report["items"]:
        click.echo(f"  #{item['id']} {item['createdAt']} {item['reason']} {item['queue']}: {item['detail']}")
