"""Gallery domain core: what a gallery function depends on, who may see a work, how a
work is rendered, and saving, editing and deleting works.

Every write is one transaction. Files are copied from the render output to the work's
own ``works/`` keys *before* the row is written, so a storage failure leaves no row
pointing at a missing file; a work's files are removed after commit once no other work
references them (outputs have their own copies, which the render side expires).
"""
from __future__ import annotations

import logging
import math
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable
from zoneinfo import ZoneInfo

from sqlalchemy import case, delete, func, select, true, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shared.db import Database, after_commit, isoformat, utcnow
from shared.errors import Conflict, Forbidden, NotFound, ServiceUnavailable
from shared.events import EventBus
from shared.storage import Storage, StorageError, is_valid_key, remove_unreferenced
from shared.tokens import Claims

from .authors import AuthorDirectory
from .config import GalleryConfig
from .models import Notification, Work, WorkHit, WorkLike, WorkReport, WorkTag
from services.render.client import OutputRecord, RenderClient

log = logging.getLogger(__name__)

MAX_ID = 2**31 - 1
WORK_KEY_PREFIX = "works/"
NEW_FOR = timedelta(hours=24)
# Trending: every day of age halves a work's weight, i.e. it needs twice the (likes + 1)
# to rank level with a work one day younger. Stored as log2(likes + 1) + age offset, so
# the order never needs recomputing as time passes and can use an index.
TRENDING_HALF_LIFE_SECONDS = 86_400.0
TRENDING_EPOCH = datetime(2025, 1, 1)


@dataclass(frozen=True)
class Gallery:
    """What the gallery's functions depend on, built once per app."""

    db: Database
    outputs: RenderClient
    storage: Storage
    authors: AuthorDirectory
    events: EventBus | None
    config: GalleryConfig


def hot_score(likes: int, created_at: datetime) -> float:
    return math.log2(max(likes, 0) + 1) + (created_at - TRENDING_EPOCH).total_seconds() / TRENDING_HALF_LIFE_SECONDS


def period_start(period: str, zone: ZoneInfo, now: datetime) -> datetime | None:
    """Naive-UTC start of today / this week (from Monday) / this month in ``zone``; None for all."""
    local = now.replace(tzinfo=timezone.utc).astimezone(zone)
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "today":
        start = midnight
    elif period == "week":
        start = midnight - timedelta(days=midnight.weekday())
    elif period == "month":
        start = midnight.replace(day=1)
    else:
        return None
    # Rebuild through the zone so a DST change between then and now is honoured.
    start = start.replace(tzinfo=None).replace(tzinfo=zone)
    return start.astimezone(timezone.utc).replace(tzinfo=None)


def normalise(text: str) -> str:
    """Fold width, compatibility forms and case, so 'ＡＩ' finds 'ai' and search is case-blind."""
    return unicodedata.normalize("NFKC", text).casefold()


def search_text(title: str, description: str, prompt: str, tags: Iterable[str]) -> str:
    return normalise("\n".join([title, description, prompt, " ".join(tags)]))


def work_not_found() -> NotFound:
    return NotFound("This work does not exist.", code="WORK_NOT_FOUND")


def may_see(work: Work, viewer: Claims | None) -> bool:
    """Listed works for everyone; anything else only for its owner and administrators."""
    if work.listed:
        return True
    return viewer is not None and (viewer.user_id == work.user_id or viewer.is_admin)


def visible_work(session: Session, work_id: int, viewer: Claims | None, *, lock: bool = False) -> Work:
    """The work if the viewer may see it; otherwise 404 (a private work's existence is not revealed)."""
    if not 1 <= work_id <= MAX_ID:
        raise work_not_found()
    stmt = select(Work).where(Work.id == work_id)
    if lock:
        stmt = stmt.with_for_update()
    work = session.scalars(stmt).one_or_none()
    if work is None or not may_see(work, viewer):
        raise work_not_found()
    return work


def owned_work(session: Session, work_id: int, user: Claims) -> Work:
    work = visible_work(session, work_id, user, lock=True)
    if work.user_id != user.user_id:
        raise Forbidden("Only the author may change this work.", code="NOT_YOUR_WORK")
    return work


def is_liked(session: Session, work_id: int, user_id: int | None) -> bool:
    if user_id is None:
        return False
    stmt = select(WorkLike.id).where(WorkLike.work_id == work_id, WorkLike.user_id == user_id)
    return session.scalar(stmt) is not None


def media_urls(gallery: Gallery, work: Work) -> tuple[str, str]:
    """Plain URLs for listed works (cacheable by anyone), expiring signed URLs otherwise."""
    url = gallery.storage.url if work.listed else gallery.storage.signed_url
    return url(work.image_key), url(work.thumbnail_key)


def author_of(gallery: Gallery, work: Work, directory: dict[int, dict[str, Any]]) -> dict[str, Any]:
    entry = directory.get(work.user_id) or {}
    return {"id": work.user_id, "username": entry.get("username") or work.author_username,
            "avatarUrl": entry.get("avatarUrl")}


def dump_item(gallery: Gallery, work: Work, *, viewer_id: int | None, liked: bool,
              author: dict[str, Any], now: datetime) -> dict[str, Any]:
    """A work as a gallery card or a row of "my works"."""
    image_url, thumbnail_url = media_urls(gallery, work)
    item = {
        "id": work.id, "title": work.title, "description": work.description, "tags": list(work.tags or []),
        "isPublic": work.is_public, "imageUrl": image_url, "thumbnailUrl": thumbnail_url,
        "width": work.width, "height": work.height, "prompt": work.prompt, "model": work.model,
        "author": author, "likes": work.likes_count, "views": work.views_count,
        "downloads": work.downloads_count, "isLiked": liked,
        "isOwner": viewer_id is not None and viewer_id == work.user_id,
        "isNew": now - work.created_at < NEW_FOR,
        "featured": work.featured_at is not None or work.likes_count >= gallery.config.featured_likes,
        "createdAt": isoformat(work.created_at), "updatedAt": isoformat(work.updated_at),
    }
    if item["isOwner"] or work.is_hidden:
        item["hidden"] = work.is_hidden
        item["hiddenReason"] = work.hidden_reason if item["isOwner"] else None
    return item


def dump_detail(gallery: Gallery, session: Session, work: Work, viewer: Claims | None) -> dict[str, Any]:
    """Everything about one work, including what it takes to reproduce it."""
    viewer_id = viewer.user_id if viewer else None
    directory = gallery.authors.lookup([work.user_id])
    item = dump_item(gallery, work, viewer_id=viewer_id, liked=is_liked(session, work.id, viewer_id),
                     author=author_of(gallery, work, directory), now=utcnow())
    params = dict(work.params or {})
    item.update({
        "hidden": work.is_hidden, "hiddenReason": work.hidden_reason if item["isOwner"] else None,
        "fileSize": work.file_size, "sha256": work.sha256, "workflow": work.workflow,
        "workflowVersion": work.workflow_version, "negativePrompt": params.get("negativePrompt", ""),
        "params": params, "graph": work.graph, "sourceWorkId": work.source_work_id,
        "jobId": work.job_id, "outputId": work.output_id,
    })
    return item


# Saving

def _work_key(output_key: str) -> str:
    if not is_valid_key(output_key) or output_key.startswith(WORK_KEY_PREFIX):
        raise ServiceUnavailable("The render service answered with a malformed file key.",
                                 code="UPSTREAM_MALFORMED")
    return WORK_KEY_PREFIX + output_key


def _copy_files(gallery: Gallery, output: OutputRecord) -> tuple[str, str]:
    """Give the work its own copies of the output's image and thumbnail."""
    pairs = [(output.image_key, _work_key(output.image_key)),
             (output.thumbnail_key, _work_key(output.thumbnail_key))]
    try:
        for source, dest in pairs:
            gallery.storage.copy(source, dest)
    except FileNotFoundError as exc:
        raise Conflict("This output's files are gone; it can no longer be saved.",
                       code="OUTPUT_FILE_MISSING") from exc
    except (StorageError, OSError) as exc:
        log.error("storage failed while saving output %s: %s", output.id, exc)
        raise ServiceUnavailable("File storage is unavailable; nothing was saved. Try again shortly.",
                                 code="STORAGE_UNAVAILABLE") from exc
    return pairs[0][1], pairs[1][1]


def _ensure_copied(gallery: Gallery, outputs: list[OutputRecord]) -> None:
    """After commit: restore a copy that a concurrent delete of an identical work removed."""
    for output in outputs:
        for source in (output.image_key, output.thumbnail_key):
            dest = _work_key(source)
            try:
                if not gallery.storage.exists(dest):
                    gallery.storage.copy(source, dest)
            except (StorageError, OSError) as exc:
                log.error("could not restore %s after saving output %s: %s", dest, output.id, exc)


def _default_public(gallery: Gallery, user: Claims) -> bool:
    """The author's privacy choice for new works (auth's ``newWorksPublic``); private when unknown."""
    try:
        entry = gallery.authors.fetch(user.user_id)
    except Exception as exc:  # any failure of the lookup must fall back to the safe choice
        log.warning("privacy setting of user %s unreadable (%s); saving as private", user.user_id,
                    exc.__class__.__name__)
        return False
    if entry is None:
        return False
    return bool(entry.get("newWorksPublic", True))


def _already_saved(session: Session, output_id: str) -> Conflict:
    work_id = session.scalar(select(Work.id).where(Work.output_id == output_id))
    return Conflict("This output is already saved as a work.", code="ALREADY_SAVED",
                    details={"workId": work_id})


def _new_work(user: Claims, output: OutputRecord, keys: tuple[str, str], title: str,
              data: dict[str, Any], is_public: bool, now: datetime) -> Work:
    tags = data.get("tags", [])
    description = data.get("description", "")
    prompt = str(output.params.get("prompt") or "")
    return Work(
        user_id=user.user_id, author_username=user.username, output_id=output.id, job_id=output.job_id,
        title=title, description=description, tags=tags, is_public=is_public, listed=is_public,
        is_hidden=False, image_key=keys[0], thumbnail_key=keys[1], width=output.width, height=output.height,
        file_size=output.file_size, sha256=output.sha256, workflow=output.workflow,
        workflow_version=output.workflow_version, model=str(output.params.get("model") or "")[:128],
        source_work_id=output.source_work_id, graph=output.graph, params=output.params, prompt=prompt,
        search_text=search_text(title, description, prompt, tags), likes_count=0, views_count=0,
        downloads_count=0, hot_score=hot_score(0, now), created_at=now, updated_at=now)


def _set_tags(session: Session, work_id: int, tags: list[str]) -> None:
    session.execute(delete(WorkTag).where(WorkTag.work_id == work_id))
    folded = dict.fromkeys(normalise(tag)[:20] for tag in tags)
    if folded:
        session.add_all([WorkTag(work_id=work_id, tag=tag) for tag in folded])


def _insert_works(gallery: Gallery, user: Claims, rows: list[tuple[OutputRecord, str, tuple[str, str]]],
                  data: dict[str, Any], is_public: bool) -> list[dict[str, Any]]:
    with gallery.db.transaction() as session:
        now = utcnow()
        works = []
        for output, title, keys in rows:
            work = _new_work(user, output, keys, title, data, is_public, now)
            try:
                with session.begin_nested():
                    session.add(work)
                    session.flush()
            except IntegrityError:
                raise _already_saved(session, output.id) from None
            _set_tags(session, work.id, work.tags)
            works.append(work)
        session.flush()
        return [dump_detail(gallery, session, work, user) for work in works]


def _own_output(output: OutputRecord, user: Claims) -> None:
    if output.user_id != user.user_id:
        raise Forbidden("This output belongs to someone else.", code="NOT_YOUR_OUTPUT")


def save_work(gallery: Gallery, user: Claims, data: dict[str, Any]) -> dict[str, Any]:
    """Save one of the caller's render outputs as a work (one work per output)."""
    output = gallery.outputs.output(data["output_id"])
    _own_output(output, user)
    with gallery.db.read() as session:
        if session.scalar(select(Work.id).where(Work.output_id == output.id)) is not None:
            raise _already_saved(session, output.id)
    is_public = data["is_public"] if "is_public" in data else _default_public(gallery, user)
    keys = _copy_files(gallery, output)
    [work] = _insert_works(gallery, user, [(output, data["title"], keys)], data, is_public)
    _ensure_copied(gallery, [output])
    return work


def save_job(gallery: Gallery, user: Claims, data: dict[str, Any]) -> dict[str, Any]:
    """Save every not-yet-saved output of one of the caller's jobs, titled "<title> #n"."""
    outputs = gallery.outputs.job_outputs(data["job_id"])
    if not outputs:
        raise NotFound("This job has no outputs to save.", code="JOB_HAS_NO_OUTPUTS")
    for output in outputs:
        _own_output(output, user)
    with gallery.db.read() as session:
        saved = set(session.scalars(select(Work.output_id).where(Work.output_id.in_([o.id for o in outputs]))))
    pending = [output for output in outputs if output.id not in saved]
    is_public = data["is_public"] if "is_public" in data else _default_public(gallery, user)
    rows = []
    for output in pending:
        title = data["title"] if len(outputs) == 1 else f"{data['title'][:94]} #{output.index + 1}"
        rows.append((output, title, _copy_files(gallery, output)))
    works = _insert_works(gallery, user, rows, data, is_public) if rows else []
    _ensure_copied(gallery, pending)
    return {"works": works, "skipped": sorted(saved)}


# Editing and deleting

def apply_changes(session: Session, work: Work, changes: dict[str, Any]) -> None:
    """Set editable fields and keep the derived columns (listed, search text, tag rows) in step."""
    for field, value in changes.items():
        setattr(work, field, value)
    work.listed = work.is_public and not work.is_hidden
    work.search_text = search_text(work.title, work.description, work.prompt, work.tags or [])
    if "tags" in changes:
        _set_tags(session, work.id, work.tags)
    work.updated_at = utcnow()


def update_work(gallery: Gallery, user: Claims, work_id: int, changes: dict[str, Any]) -> dict[str, Any]:
    with gallery.db.transaction() as session:
        work = owned_work(session, work_id, user)
        apply_changes(session, work, changes)
        session.flush()
        return dump_detail(gallery, session, work, user)


def referenced_keys(session: Session, keys: list[str]) -> set[str]:
    """Those of ``keys`` that some work still uses as its image or thumbnail."""
    if not keys:
        return set()
    images = session.scalars(select(Work.image_key).where(Work.image_key.in_(keys)))
    thumbs = session.scalars(select(Work.thumbnail_key).where(Work.thumbnail_key.in_(keys)))
    return set(images) | set(thumbs)


def remove_work_rows(session: Session, work_ids: list[int]) -> None:
    """Delete works and everything hanging off them (flushes, does not commit)."""
    if not work_ids:
        return
    for model in (WorkLike, WorkTag, WorkHit, WorkReport):
        session.execute(delete(model).where(model.work_id.in_(work_ids)))
    session.execute(delete(Work).where(Work.id.in_(work_ids)).execution_options(synchronize_session=False))


def remove_files_after_commit(gallery: Gallery, session: Session, keys: Iterable[str]) -> None:
    """Once the transaction commits, delete the gallery's own files no work references any more."""
    own = [key for key in set(keys) if key.startswith(WORK_KEY_PREFIX)]

    def still_used(candidates: list[str]) -> set[str]:
        with gallery.db.read() as reader:
            return referenced_keys(reader, candidates)

    def remove() -> None:
        try:
            remove_unreferenced(gallery.storage, own, still_used)
        except (StorageError, OSError) as exc:
            log.error("could not remove files %s: %s", own, exc)

    if own:
        after_commit(session, remove)


def delete_work(gallery: Gallery, user: Claims, work_id: int) -> dict[str, Any]:
    with gallery.db.transaction() as session:
        work = owned_work(session, work_id, user)
        keys = [work.image_key, work.thumbnail_key]
        remove_work_rows(session, [work.id])
        remove_files_after_commit(gallery, session, keys)
    return {"deleted": True}


def batch_update(gallery: Gallery, user: Claims, data: dict[str, Any]) -> dict[str, Any]:
    """Publish, unpublish, tag or delete several of the caller's works: all or nothing."""
    ids = data["ids"]
    with gallery.db.transaction() as session:
        works = list(session.scalars(select(Work).where(Work.id.in_(ids), Work.user_id == user.user_id)
                                     .order_by(Work.id).with_for_update()))
        missing = sorted(set(ids) - {work.id for work in works})
        if missing:
            raise NotFound("Some of these works do not exist or are not yours.", code="WORK_NOT_FOUND",
                           details={"missing": missing})
        action = data["action"]
        if action == "delete":
            keys = [key for work in works for key in (work.image_key, work.thumbnail_key)]
            remove_work_rows(session, ids)
            remove_files_after_commit(gallery, session, keys)
        for work in works if action != "delete" else []:
            if action == "tag":
                tags = list(dict.fromkeys([*(work.tags or []), *data["tags"]]))
                if len(tags) > 10:
                    raise Conflict("A work may have at most 10 tags.", code="TOO_MANY_TAGS",
                                   details={"workId": work.id})
                apply_changes(session, work, {"tags": tags})
            else:
                apply_changes(session, work, {"is_public": action == "publish"})
    return {"action": action, "ids": sorted(ids)}


def remix(gallery: Gallery, viewer: Claims | None, work_id: int) -> dict[str, Any]:
    """The settings to pre-fill the create page; a job made from them passes ``sourceWorkId``."""
    with gallery.db.read() as session:
        work = visible_work(session, work_id, viewer)
        return {"sourceWorkId": work.id, "workflow": work.workflow, "workflowVersion": work.workflow_version,
                "params": dict(work.params or {})}


def get_work(gallery: Gallery, viewer: Claims | None, work_id: int) -> dict[str, Any]:
    """One work; reading never counts a view."""
    with gallery.db.read() as session:
        return dump_detail(gallery, session, visible_work(session, work_id, viewer), viewer)


def my_stats(gallery: Gallery, user: Claims) -> dict[str, Any]:
    month_start = period_start("month", gallery.config.timezone, utcnow())
    with gallery.db.read() as session:
        row = session.execute(select(
            func.count(Work.id), func.coalesce(func.sum(case((Work.is_public == true(), 1), else_=0)), 0),
            func.coalesce(func.sum(Work.likes_count), 0), func.coalesce(func.sum(Work.views_count), 0),
            func.coalesce(func.sum(Work.downloads_count), 0),
        ).where(Work.user_id == user.user_id)).one()
        this_month = session.scalar(select(func.count(Work.id)).where(
            Work.user_id == user.user_id, Work.created_at >= month_start))
    return {"totalWorks": int(row[0]), "publicWorks": int(row[1]), "likesReceived": int(row[2]),
            "viewsReceived": int(row[3]), "downloadsReceived": int(row[4]), "worksThisMonth": int(this_month)}


def public_profile_stats(gallery: Gallery, user_id: int) -> dict[str, int]:
    """For auth's public profile: the user's listed works and the likes they received."""
    with gallery.db.read() as session:
        works, likes = session.execute(select(func.count(Work.id), func.coalesce(func.sum(Work.likes_count), 0))
                                       .where(Work.user_id == user_id, Work.listed == true())).one()
    return {"works": int(works), "likesReceived": int(likes)}


def media_is_public(gallery: Gallery, key: str) -> bool:
    """Whether a listed work shows this file (then anyone may fetch it without a signature)."""
    with gallery.db.read() as session:
        stmt = select(Work.id).where(Work.listed == true(), (Work.image_key == key) | (Work.thumbnail_key == key))
        return session.scalar(stmt.limit(1)) is not None


def keys_in_use(gallery: Gallery, keys: list[str]) -> list[str]:
    with gallery.db.read() as session:
        return sorted(referenced_keys(session, keys))


def remove_user(gallery: Gallery, user_id: int) -> dict[str, int]:
    """Erase a deleted account: its works (and their files), likes, views, reports and notifications."""
    with gallery.db.transaction() as session:
        works = session.execute(select(Work.id, Work.image_key, Work.thumbnail_key)
                                .where(Work.user_id == user_id)).all()
        liked = list(session.scalars(select(WorkLike.work_id).where(WorkLike.user_id == user_id)))
        if liked:
            session.execute(update(Work).where(Work.id.in_(liked))
                            .values(likes_count=Work.likes_count - 1).execution_options(synchronize_session=False))
            session.execute(delete(WorkLike).where(WorkLike.user_id == user_id))
            for work_id, likes, created_at in session.execute(
                    select(Work.id, Work.likes_count, Work.created_at).where(Work.id.in_(liked))):
                session.execute(update(Work).where(Work.id == work_id).values(hot_score=hot_score(likes, created_at)))
        remove_work_rows(session, [row.id for row in works])
        session.execute(delete(WorkHit).where(WorkHit.viewer == f"u:{user_id}"))
        session.execute(delete(WorkReport).where(WorkReport.reporter_id == user_id))
        session.execute(delete(Notification).where(Notification.user_id == user_id))
        remove_files_after_commit(gallery, session, [key for row in works for key in row[1:]])
    return {"works": len(works), "likes": len(liked)}
