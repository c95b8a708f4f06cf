"""Public reads (gallery pages, work details) answered from the edge cache, for anonymous
and signed-in callers alike.

Anonymous: the cached answer (``services/gateway/cache.py``), or 304.

Signed in: the anonymous answer with the viewer's ``isLiked`` laid over it, from the
gallery's set of the viewer's liked works in Redis (one SMISMEMBER for the page's ids, keyed
by the verified token's user id), or when that set is missing from one indexed query of the
gallery, which rebuilds it (``GalleryClient.liked``, ``services/gallery/liked.py``). Anything the
anonymous answer cannot stand for goes to the gallery as the viewer asked it: a token the
gateway does not accept (the gallery answers why), an administrator, a work or page showing
one of the viewer's own works (the author sees more), and anything the anonymous caller is
not shown (a private work's details). These answers are ``Cache-Control: private, no-cache``
and never enter the cache.
"""
from __future__ import annotations

import logging
from typing import Any, Callable

import orjson
from flask import Request, Response
from flask_jwt_extended.exceptions import JWTExtendedException
from jwt import PyJWTError

from services.gallery.client import GalleryClient
from services.gateway.cache import EdgeCache, Entry, cache_key
from shared.errors import ServiceError
from shared.tokens import Claims, optional_user

log = logging.getLogger(__name__)

# fetch(anonymous): the upstream's answer to the current request, without the caller's
# Authorization header when ``anonymous``.
Fetch = Callable[[bool], Response]


# A signed-in caller's answer: for that caller only, and never kept.
PERSONAL_HEADERS = (("Cache-Control", "private, no-cache"), ("Vary", "Authorization"), ("X-Edge-Cache", "PERSONAL"))


def personal_body(entry: Entry, viewer: Claims, liked: Callable[[list[int]], set[int] | None]) -> bytes | None:
    """The cached anonymous answer with ``viewer``'s ``isLiked`` laid over it (``liked``: which
    of these work ids the viewer likes, None when unknown); None when only the gallery can say:
    the page shows the viewer's own work (the author sees more) or the likes are unknown."""
    document = orjson.loads(entry.body)
    data = document.get("data") or {}
    items: list[dict[str, Any]] = data["items"] if "items" in data else [data["work"]]
    if any((item.get("author") or {}).get("id") in (viewer.user_id, None) for item in items):
        return None
    found = liked([item["id"] for item in items]) if items else set()
    if found is None:
        return None
    for item in items:
        item["isLiked"] = item["id"] in found
    return orjson.dumps(document)


class PublicReads:
    def __init__(self, cache: EdgeCache, gallery: GalleryClient) -> None:
        self.cache = cache
        self.gallery = gallery

    def handles(self, request: Request) -> bool:
        return self.cache.handles(request)

    def answer(self, request: Request, fetch: Fetch) -> Response:
        key = cache_key(request)
        if "Authorization" not in request.headers:
            found, state = self.cache.get(key, lambda: fetch(True))
            return found if isinstance(found, Response) else self.cache.respond(request, found, state)
        viewer = _viewer()
        if viewer is None or viewer.role != "user":
            return fetch(False)
        found, _state = self.cache.get(key, lambda: fetch(True))
        personal = self._personal(found, viewer) if isinstance(found, Entry) else None
        return personal if personal is not None else fetch(False)

    def _personal(self, entry: Entry, viewer: Claims) -> Response | None:
        """The entry as ``viewer`` sees it, or None when only the gallery can say."""
        def liked(work_ids: list[int]) -> set[int] | None:
            try:
                return self.gallery.liked(viewer.user_id, work_ids)
            except ServiceError as exc:
                log.warning("likes of user %s unavailable (%s); asking the gallery for the page", viewer.user_id,
                            exc.code)
                return None

        body = personal_body(entry, viewer, liked)
        if body is None:
            return None
        return Response(body, status=200, content_type=entry.content_type, headers=dict(PERSONAL_HEADERS))

    def close(self) -> None:
        self.cache.close()
        self.gallery.close()


def _viewer() -> Claims | None:
    """The caller's verified, unrevoked claims; None on any doubt (the gallery then answers,
    with its own refusal if the token is bad)."""
    try:
        return optional_user()
    except (JWTExtendedException, PyJWTError, ServiceError):
        return None
