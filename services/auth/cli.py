"""Operator commands: ``flask --app services.auth.app:create_app auth create-admin NAME EMAIL``."""
from __future__ import annotations

import click
from flask import current_app
from flask.cli import AppGroup
from marshmallow import ValidationError

from shared.errors import ServiceError
from services.auth.schemas import RegisterSchema

auth_cli = AppGroup("auth", help="Manage platform accounts.")


@auth_cli.command("create-admin")
@click.argument("username")
@click.argument("email")
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True,
              help="Prompted for when not given.")
def create_admin(username: str, email: str, password: str) -> None:
    """Create an administrator account (same rules as registration)."""
    try:
        data = RegisterSchema().load({"username": username, "email": email, "password": password})
        user = current_app.extensions["auth"].create_user(data["username"], data["email"],
                                                          data["password"], role="admin")
    except ValidationError as exc:
        raise click.ClickException(f"invalid input: {exc.messages}") from exc
    except ServiceError as exc:
        raise click.ClickException(exc.message) from exc
    click.echo(f"created admin {user.username} (id {user.id})")
