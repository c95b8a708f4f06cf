"""Listing works and counting them: the public gallery (cursor pages for infinite scroll),
the caller's own works (numbered pages with a total), and a user's statistics.

Search in the gallery goes through the term index (``search.py``): each word narrows by an
indexed range, ranked title-and-tag matches first. The caller's own works are few, so
their search (and the moderators') is the folded-text check alone (``search_conditions``).
"""
from __future__ import annotations

import base64
import json
import math
from datetime import date, datetime, time, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, and_, case, exists, false, func, or_, select, true
from sqlalchemy.orm import Session, load_only

from shared.db import MAX_ID, Database, utcnow
from shared.errors import Unprocessable
from shared.tokens import Claims
from services.gallery.models import Work, WorkLike, WorkTag
from services.gallery.search import MAX_SEARCH_WORDS, WALK_ROWS, Search, TermCounts, normalise
from services.gallery.schemas import WorkPresenter

LIST_COLUMNS = (Work.id, Work.user_id, Work.author_username, Work.title, Work.description, Work.tags,
                Work.is_public, Work.listed, Work.is_hidden, Work.hidden_reason, Work.featured_at,
                Work.review_state, Work.review_reason, Work.review_categories,
                Work.image_key, Work.thumbnail_key, Work.width, Work.height, Work.prompt, Work.model,
                Work.likes_count, Work.views_count, Work.downloads_count, Work.hot_score,
                Work.created_at, Work.updated_at)
GALLERY_SORTS = {"newest": Work.created_at, "hottest": Work.likes_count, "views": Work.views_count,
                 "trending": Work.hot_score}
LISTED = Work.listed == true()
# The same, for works named by id: no index to be chosen over the primary key (SQLite without
# statistics would walk a (listed, …) index and test each id against the list).
LISTED_BY_ID = func.coalesce(Work.listed, false()) == true()
MY_SORTS = {"newest": (Work.created_at.desc(), Work.id.desc()), "oldest": (Work.created_at, Work.id),
            "likes": (Work.likes_count.desc(), Work.id.desc()), "views": (Work.views_count.desc(), Work.id.desc())}


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


def _local_midnight(day: date, zone: ZoneInfo, days: int = 0) -> datetime:
    start = datetime.combine(day + timedelta(days=days), time(), tzinfo=zone)
    return start.astimezone(timezone.utc).replace(tzinfo=None)


def search_conditions(term: str) -> list[ColumnElement[bool]]:
    words = normalise(term).split()[:MAX_SEARCH_WORDS]
    return [Work.search_text.contains(word, autoescape=True) for word in words]


def _tag(tag: str) -> ColumnElement[bool]:
    return exists().where(WorkTag.work_id == Work.id, WorkTag.tag == normalise(tag))


def encode_cursor(sort: str, value: Any, work_id: int, group: int = 1) -> str:
    if isinstance(value, datetime):
        value = value.isoformat()
    parts = [sort, value, work_id] + ([group] if group != 1 else [])
    raw = json.dumps(parts, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, sort: str) -> tuple[Any, int, int]:
    """(sort value, id, search ranking group) after which the next page starts; 422
    INVALID_CURSOR when it is not ours."""
    invalid = Unprocessable("The cursor is malformed or belongs to another sort.", code="INVALID_CURSOR",
                            details={"cursor": ["Invalid cursor."]})
    try:
        name, value, work_id, *rest = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        group = rest[0] if rest else 1
        if name != sort or not isinstance(work_id, int) or isinstance(work_id, bool) or not 1 <= work_id <= MAX_ID:
            raise invalid
        if len(rest) > 1 or group not in (1, 2) or isinstance(group, bool):
            raise invalid
        if sort == "newest":
            value = datetime.fromisoformat(value)
        elif sort == "trending":
            value = float(value)
            if not math.isfinite(value):  # no column holds inf or nan
                raise invalid
        elif not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_ID:
            raise invalid
    except (ValueError, TypeError, UnicodeDecodeError) as exc:
        raise invalid from exc
    return value, work_id, group


def _liked(session: Session, viewer_id: int | None, works: list[Work]) -> set[int]:
    if viewer_id is None or not works:
        return set()
    return set(session.scalars(select(WorkLike.work_id).where(
        WorkLike.user_id == viewer_id, WorkLike.work_id.in_([w.id for w in works]))))


class WorkListing:
    def __init__(self, db: Database, presenter: WorkPresenter, zone: ZoneInfo) -> None:
        self.db = db
        self.presenter = presenter
        self.zone = zone
        self.counts = TermCounts()

    def _items(self, session: Session, works: list[Work], viewer_id: int | None) -> list[dict[str, Any]]:
        return self.presenter.items(works, viewer_id, _liked(session, viewer_id, works))

    def list_gallery(self, viewer: Claims | None, query: dict[str, Any]) -> dict[str, Any]:
        """Listed works, filtered and sorted, one cursor page at a time; with a search, the
        works matching every word in their title or tags come first."""
        sort, size = query["sort"], query["page_size"]
        column = GALLERY_SORTS[sort]
        conditions: list[ColumnElement[bool]] = []
        if query.get("tag"):
            conditions.append(_tag(query["tag"]))
        if query.get("model"):
            conditions.append(Work.model == query["model"])
        if query.get("author_id"):
            conditions.append(Work.user_id == query["author_id"])
        since = period_start(query["period"], self.zone, utcnow())
        if since is not None:
            conditions.append(Work.created_at >= since)
        search = Search.parse(query["search"])
        group, after = 1, []
        if query.get("cursor"):
            value, after_id, group = decode_cursor(query["cursor"], sort)
            # The plain bound first: a range the sort's index can start from (the exact one
            # alone is an OR that databases test row by row from the top).
            after = [column <= value, or_(column < value, and_(column == value, Work.id < after_id))]
        viewer_id = viewer.user_id if viewer else None
        resume = None
        with self.db.read() as session:
            if not search:
                found = [(work, 1) for work in self._page(session, [LISTED, *conditions, *after], column, size + 1)]
            else:
                found, resume = self._search(session, search, conditions, group, after, column, size)
            more = len(found) > size
            found = found[:size]
            works = [work for work, _group in found]
            items = self._items(session, works, viewer_id)
        next_cursor = None
        if more and found:
            last, last_group = found[-1]
            next_cursor = encode_cursor(sort, getattr(last, column.key), last.id, last_group)
        elif resume is not None:
            next_cursor = encode_cursor(sort, *resume)
        return {"items": items, "nextCursor": next_cursor, "pageSize": size}

    def _search(self, session: Session, search: Search, conditions: list[ColumnElement[bool]], group: int,
                after: list[ColumnElement[bool]], column, size: int) -> tuple[list[tuple[Work, int]], tuple | None]:
        """Up to ``size`` + 1 listed matches (meeting ``conditions``) from ``group`` on, and
        where to read on when the page stopped at the reading bound before filling: ``(sort
        value, id, group)`` or None."""
        found: list[tuple[Work, int]] = []
        while group <= 2:
            candidates = search.candidates(session, group, self.counts)
            if candidates is None:
                works, resume = self._walk(session, search, group, [LISTED, *conditions, *after], column,
                                           size + 1 - len(found))
                found += [(work, group) for work in works]
                if len(found) > size or resume is not None:
                    return found, resume
            else:
                hits = search.matching(session, candidates, group)
                if hits:  # in sort order, the ones that are listed and meet the conditions
                    values = session.execute(select(Work.id, column).where(
                        Work.id.in_(hits), LISTED_BY_ID, *conditions, *after)).all()
                    hits = [work_id for work_id, _value in sorted(values, key=lambda row: (row[1], row[0]),
                                                                   reverse=True)]
                found += [(work, group) for work in self._read(session, hits, search.text_conditions(),
                                                               size + 1 - len(found))]
                if len(found) > size:
                    return found, None
            group, after = group + 1, []
        return found, None

    def _walk(self, session: Session, search: Search, group: int, conditions: list[ColumnElement[bool]], column,
              limit: int) -> tuple[list[Work], tuple | None]:
        """Up to ``limit`` works of the group among the next ``WALK_ROWS`` works in sort order,
        and where to read on when the page is not full: ``(sort value, id, group)``, or None
        when the group has no more. The walk is one statement on the sort's index (bounded
        below by the ``WALK_ROWS``-th work, so it stops there) with a lookup per term and work;
        only the works it finds are read."""
        boundary = session.execute(select(column, Work.id).where(*conditions).order_by(column.desc(), Work.id.desc())
                                   .offset(WALK_ROWS - 1).limit(1)).first()
        bounded = [] if boundary is None else [
            column >= boundary[0], or_(column > boundary[0], Work.id >= boundary[1])]
        found = session.execute(select(Work.id, column).where(*conditions, *bounded, *search.group_conditions(group))
                                .order_by(column.desc(), Work.id.desc()).limit(limit)).all()
        works = self._read(session, [work_id for work_id, _value in found], search.text_conditions(), limit)
        if len(found) == limit:
            return works, (None if len(works) == limit else (found[-1][1], found[-1][0], group))
        return works, (None if boundary is None else (boundary[0], boundary[1], group))

    @staticmethod
    def _read(session: Session, work_ids: list[int], conditions: list[ColumnElement[bool]],
              limit: int) -> list[Work]:
        """The first ``limit`` works of ``work_ids`` (in sort order) that meet ``conditions``,
        read by id a few more than needed at a time, not all."""
        works: list[Work] = []
        start, step = 0, limit
        while len(works) < limit and start < len(work_ids):
            part = work_ids[start:start + step]
            read = {work.id: work for work in session.scalars(
                select(Work).options(load_only(*LIST_COLUMNS)).where(Work.id.in_(part), *conditions))}
            works += [read[work_id] for work_id in part if work_id in read][:limit - len(works)]
            start, step = start + step, step * 2
        return works

    @staticmethod
    def _page(session: Session, conditions: list[ColumnElement[bool]], column, limit: int) -> list[Work]:
        return list(session.scalars(select(Work).options(load_only(*LIST_COLUMNS)).where(*conditions)
                                    .order_by(column.desc(), Work.id.desc()).limit(limit)))

    def list_my_works(self, user: Claims, query: dict[str, Any]) -> dict[str, Any]:
        """The caller's own works (public, private and hidden), in numbered pages with a total."""
        conditions: list[ColumnElement[bool]] = [Work.user_id == user.user_id, *search_conditions(query["search"])]
        visibility = query["visibility"]
        if visibility == "public":
            conditions.append(Work.is_public == true())
        elif visibility == "private":
            conditions.append(Work.is_public == false())
        elif visibility == "hidden":
            conditions.append(Work.is_hidden == true())
        if query.get("tag"):
            conditions.append(_tag(query["tag"]))
        if query.get("model"):
            conditions.append(Work.model == query["model"])
        if query.get("date_from"):
            conditions.append(Work.created_at >= _local_midnight(query["date_from"], self.zone))
        if query.get("date_to"):
            conditions.append(Work.created_at < _local_midnight(query["date_to"], self.zone, days=1))
        page, size = query["page"], query["page_size"]
        with self.db.read() as session:
            total = session.scalar(select(func.count()).select_from(Work).where(*conditions))
            works = list(session.scalars(select(Work).options(load_only(*LIST_COLUMNS)).where(*conditions)
                                         .order_by(*MY_SORTS[query["sort"]]).offset((page - 1) * size).limit(size)))
            items = self._items(session, works, user.user_id)
        return {"items": items, "page": page, "pageSize": size, "total": total}

    def my_stats(self, user: Claims) -> dict[str, Any]:
        month_start = period_start("month", self.zone, utcnow())
        with self.db.read() as session:
            row = session.execute(select(
                func.count(Work.id), func.coalesce(func.sum(case((Work.is_public == true(), 1), else_=0)), 0),
                func.coalesce(func.sum(Work.likes_count), 0), func.coalesce(func.sum(Work.views_count), 0),
                func.coalesce(func.sum(Work.downloads_count), 0),
            ).where(Work.user_id == user.user_id)).one()
            this_month = session.scalar(select(func.count(Work.id)).where(
                Work.user_id == user.user_id, Work.created_at >= month_start))
        return {"totalWorks": int(row[0]), "publicWorks": int(row[1]), "likesReceived": int(row[2]),
                "viewsReceived": int(row[3]), "downloadsReceived": int(row[4]), "worksThisMonth": int(this_month)}

    def public_profile_stats(self, user_id: int) -> dict[str, int]:
        """For auth's public profile: the user's listed works and the likes they received."""
        with self.db.read() as session:
            works, likes = session.execute(select(func.count(Work.id), func.coalesce(func.sum(Work.likes_count), 0))
                                           .where(Work.user_id == user_id, Work.listed == true())).one()
        return {"works": int(works), "likesReceived": int(likes)}
