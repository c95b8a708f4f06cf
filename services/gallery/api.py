"""HTTP routes of the gallery, under /api/works (reached through the gateway)."""
from __future__ import annotations

from flask import Blueprint, current_app

from shared.errors import ok
from shared.tokens import optional_user, require_user
from shared.web import load_json, load_query

from . import service
from .schemas import GalleryQuerySchema, MyWorksQuerySchema, SaveWorkSchema, UpdateWorkSchema

bp = Blueprint("gallery", __name__, url_prefix="/api/works")


def _gallery() -> service.Gallery:
    return current_app.extensions["gallery"]


@bp.post("/save")
def save_work():
    user = require_user()
    data = load_json(SaveWorkSchema())
    return ok({"work": service.save_work(_gallery(), user, data)}, 201)


@bp.get("/gallery")
def list_gallery():
    viewer = optional_user()
    query = load_query(GalleryQuerySchema())
    return ok(service.list_gallery(_gallery(), viewer, query))


@bp.get("/my")
def list_my_works():
    user = require_user()
    query = load_query(MyWorksQuerySchema())
    return ok(service.list_my_works(_gallery(), user, query))


@bp.get("/<int:work_id>")
def get_work(work_id: int):
    return ok({"work": service.get_work(_gallery(), optional_user(), work_id)})


@bp.put("/<int:work_id>")
def update_work(work_id: int):
    user = require_user()
    changes = load_json(UpdateWorkSchema())
    return ok({"work": service.update_work(_gallery(), user, work_id, changes)})


@bp.delete("/<int:work_id>")
def delete_work(work_id: int):
    return ok(service.delete_work(_gallery(), require_user(), work_id))


@bp.put("/<int:work_id>/like")
def like_work(work_id: int):
    return ok(service.like_work(_gallery(), require_user(), work_id))


@bp.delete("/<int:work_id>/like")
def unlike_work(work_id: int):
    return ok(service.unlike_work(_gallery(), require_user(), work_id))


@bp.post("/<int:work_id>/like")
def toggle_like(work_id: int):
    return ok(service.toggle_like(_gallery(), require_user(), work_id))
