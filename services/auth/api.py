"""Routes of the auth service (reached through the gateway, which adds the service token)."""
from __future__ import annotations

from flask import Blueprint, current_app

from shared.errors import ok
from shared.tokens import require_user
from shared.web import load_json
from services.auth.schemas import LoginSchema, ProfileUpdateSchema, RegisterSchema
from services.auth.service import AuthService

bp = Blueprint("auth", __name__)


def _auth() -> AuthService:
    return current_app.extensions["auth"]


@bp.post("/api/users/register")
def register():
    data = load_json(RegisterSchema())
    return ok(_auth().register(data["username"], data["email"], data["password"]).to_dict(), 201)


@bp.post("/api/users/login")
def login():
    data = load_json(LoginSchema())
    return ok(_auth().login(data["username"], data["password"]).to_dict())


@bp.get("/api/users/profile")
def profile():
    claims = require_user()
    return ok({"user": _auth().profile(claims.user_id)})


@bp.put("/api/users/profile")
def update_profile():
    claims = require_user()
    data = load_json(ProfileUpdateSchema())
    return ok({"user": _auth().update_profile(claims.user_id, data["bio"])})
