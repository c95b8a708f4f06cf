"""What administrators tell users about models and prompts: the model registry (localised
names and descriptions, a preview picture, recommended settings) and the style and negative
presets. ``GET /api/models`` shows both beside the live catalog; the live catalog alone
decides which models can be used.

A preview is made from an image the administrator can already use as a source
(``upload:<id>``, ``output:<id>``, ``work:<id>``): re-encoded as a WebP of at most
``PREVIEW_SIDE`` pixels under ``previews/``, a prefix the gateway serves without a signature
(previews are public, like the catalog).
"""
from __future__ import annotations

import io
from typing import Any

from PIL import Image
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from services.gallery.client import GalleryClient
from services.render.models import RenderModel, RenderPreset
from services.render.uploads import resolve_source
from shared.db import Database, after_commit, isoformat, utcnow
from shared.storage import Storage, content_key

PREVIEW_SIDE = 512
PRESET_LISTS = {"style": "stylePresets", "negative": "negativePresets"}  # kind -> its list in the catalog


def preview_image(data: bytes) -> bytes:
    """A WebP of at most PREVIEW_SIDE per side, without metadata (the source was validated when stored)."""
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        picture = image.convert("RGBA" if "A" in image.getbands() else "RGB")
    picture.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    picture.save(out, format="WEBP", quality=85, method=4)
    return out.getvalue()


class ModelRegistry:
    def __init__(self, db: Database, storage: Storage, gallery: GalleryClient) -> None:
        self.db = db
        self.storage = storage
        self.gallery = gallery

    def describe(self, names: list[str]) -> dict[str, dict[str, Any]]:
        """The registry's view of each of ``names`` (blank for a model nobody described)."""
        with self.db.read() as session:
            rows = {row.name: row for row in session.scalars(select(RenderModel).where(RenderModel.name.in_(names)))}
        return {name: self._json(name, rows.get(name)) for name in names}

    def entries(self) -> list[dict[str, Any]]:
        """Every described model, by name."""
        with self.db.read() as session:
            return [self._json(row.name, row) for row in session.scalars(select(RenderModel).order_by(RenderModel.name))]

    def get(self, name: str) -> dict[str, Any]:
        return self.describe([name])[name]

    def put(self, admin_id: int, name: str, changes: dict[str, Any], bearer: str | None) -> dict[str, Any]:
        """Create or update a model's entry; ``preview`` (a source reference, or None to remove
        it) replaces the picture when given."""
        preview_key = self._store_preview(admin_id, changes["preview"], bearer) if changes.get("preview") else None
        with self.db.transaction() as session:
            row = session.get(RenderModel, name)
            if row is None:
                row = RenderModel(name=name, display_names={"zh": "", "en": ""}, descriptions={"zh": "", "en": ""},
                                  recommended={})
                session.add(row)
            for field, column in (("display_names", "display_names"), ("description", "descriptions"),
                                  ("recommended", "recommended")):
                if field in changes:
                    setattr(row, column, changes[field])
            if "preview" in changes:
                old_key, row.preview_key = row.preview_key, preview_key
                if old_key and old_key != preview_key:
                    self._remove_preview_after_commit(session, old_key, name)
            row.updated_by, row.updated_at = admin_id, utcnow()
            session.flush()
            return self._json(name, row)

    def _store_preview(self, admin_id: int, ref: str, bearer: str | None) -> str:
        with self.db.read() as session:
            source = resolve_source(session, self.gallery, self.storage, admin_id, ref, bearer, "preview")
        picture = preview_image(self.storage.read(source.image_key))
        return self.storage.put(content_key(picture, "webp", "previews"), picture)

    def _remove_preview_after_commit(self, session: Session, key: str, name: str) -> None:
        """Files are content-addressed: another model may show the same picture."""
        shared = session.scalar(select(func.count()).select_from(RenderModel)
                                .where(RenderModel.preview_key == key, RenderModel.name != name))
        if not shared:
            after_commit(session, lambda: self.storage.delete(key))

    def _json(self, name: str, row: RenderModel | None) -> dict[str, Any]:
        if row is None:
            return {"name": name, "displayNames": None, "description": None, "previewUrl": None,
                    "recommended": {}, "updatedAt": None}
        return {"name": name, "displayNames": row.display_names, "description": row.descriptions,
                "previewUrl": self.storage.url(row.preview_key) if row.preview_key else None,
                "recommended": row.recommended, "updatedAt": isoformat(row.updated_at)}


class Presets:
    def __init__(self, db: Database) -> None:
        self.db = db

    def lists(self) -> dict[str, list[dict[str, Any]]]:
        """``{"stylePresets": [...], "negativePresets": [...]}``, each ``{key, labels, text}`` in order."""
        with self.db.read() as session:
            return self._lists(session)

    def replace(self, lists: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
        """Replace the lists of the kinds given (each whole, in the order given); the others stay."""
        with self.db.transaction() as session:
            for kind, presets in lists.items():
                session.execute(delete(RenderPreset).where(RenderPreset.kind == kind))
                session.add_all(RenderPreset(kind=kind, key=preset["key"], position=position, labels=preset["labels"],
                                             text=preset["text"]) for position, preset in enumerate(presets))
            session.flush()
            return self._lists(session)

    @staticmethod
    def _lists(session: Session) -> dict[str, list[dict[str, Any]]]:
        lists: dict[str, list[dict[str, Any]]] = {name: [] for name in PRESET_LISTS.values()}
        for row in session.scalars(select(RenderPreset).order_by(RenderPreset.kind, RenderPreset.position)):
            lists[PRESET_LISTS[row.kind]].append({"key": row.key, "labels": row.labels, "text": row.text})
        return lists
