"""Operator commands: ``flask --app services.credits.app:create_app credits <command>``."""
from __future__ import annotations

import click
from flask import current_app
from flask.cli import AppGroup

from shared.errors import ServiceError
from services.auth.client import MAX_ID_PAGE, AuthClient
from services.credits.audit import audit
from services.credits.expiry import sweep_holds
from services.credits.service import CreditsService
from services.render.client import RenderClient

credits_cli = AppGroup("credits", help="Check and repair credit accounts.")


def _credits() -> CreditsService:
    return current_app.extensions["credits"]


@credits_cli.command("init-credits")
@click.option("--page-size", default=MAX_ID_PAGE, show_default=True, type=click.IntRange(1, MAX_ID_PAGE))
def init_credits(page_size: int) -> None:
    """Give the signup bonus to every user who never received it (by key), whatever their balance."""
    settings = current_app.config["SETTINGS"]
    users = AuthClient(settings.auth_url, settings.service_token, timeout=10.0)
    seen = granted = 0
    try:
        for ids in users.user_id_pages(page_size):
            seen += len(ids)
            done = _credits().grant_signup_bonuses(ids)
            granted += len(done)
            for user_id in done:
                click.echo(f"granted the signup bonus to user {user_id}")
    except ServiceError as exc:
        raise click.ClickException(f"{exc.code}: {exc.message} (granted {granted} so far)") from exc
    finally:
        users.close()
    click.echo(f"{seen} users checked, {granted} received the signup bonus")


@credits_cli.command("audit")
def audit_command() -> None:
    """Check every invariant for every account; exit 1 if anything is off."""
    found = audit(current_app.extensions["db"])
    for item in found:
        click.echo(item.render())
    if found:
        raise click.ClickException(f"{len(found)} discrepancies")
    click.echo("credits audit: clean")


@credits_cli.command("sweep-holds")
@click.option("--limit", default=500, show_default=True, type=click.IntRange(1, 10_000))
def sweep_holds_command(limit: int) -> None:
    """Release expired holds whose jobs are finished or unknown to the gateway."""
    settings = current_app.config["SETTINGS"]
    jobs = RenderClient(settings.render_url, settings.service_token)
    try:
        report = sweep_holds(_credits(), jobs.job_status, limit=limit)
    finally:
        jobs.close()
    for job_id, credits in report.released.items():
        click.echo(f"released {credits} credits of job {job_id}")
    for job_id in report.kept:
        click.echo(f"kept the hold of job {job_id}: the job is still running")
    click.echo(report.summary())
    if report.unreachable:
        raise click.ClickException(f"the gateway did not answer for {len(report.unreachable)} jobs")
