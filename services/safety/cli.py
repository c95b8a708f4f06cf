"""Operator commands: ``flask --app services.safety.app:create_app safety <command>``."""
from __future__ import annotations

import click
from flask import current_app
from flask.cli import AppGroup

from shared.tokens import Claims

safety_cli = AppGroup("safety", help="The term list and the audit log.")


@safety_cli.command("import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--category", required=True)
@click.option("--severity", type=click.Choice(["block", "review"]), default="block")
def import_command(path: str, category: str, severity: str) -> None:
    """Add the terms of a text file, one a line (blank lines and lines starting with # skipped)."""
    with open(path, encoding="utf-8") as handle:
        lines = [line.strip() for line in handle if line.strip() and not line.startswith("#")]
    operator = Claims(user_id=0, username="cli", role="admin", token_id="cli")
    result = {"added": 0, "skipped": 0}
    for start in range(0, len(lines), 10_000):
        items = [{"text": text[:200], "kind": "term", "category": category, "severity": severity, "note": ""}
                 for text in lines[start:start + 10_000]]
        outcome = current_app.extensions["safety_terms"].bulk(operator, {"items": items})
        result = {k: result[k] + outcome[k] for k in result}
    click.echo(f"{result['added']} added, {result['skipped']} already listed")


@safety_cli.command("prune")
def prune_command() -> None:
    """Delete audit rows older than SAFETY_AUDIT_RETENTION_DAYS."""
    click.echo(f"{current_app.extensions['safety_audit'].prune()} audit rows deleted")
