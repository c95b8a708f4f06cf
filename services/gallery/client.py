"""The gallery's internal API as other services call it: the notification bell, a user's
works, likes and public counts, and which media files are public or still used."""
from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote

import redis

from services.gallery.liked import read_liked
from shared.errors import ServiceError
from shared.internal_http import InternalHttp, Timeout

log = logging.getLogger(__name__)


class GalleryClient:
    def __init__(self, base_url: str, service_token: str, timeout: Timeout = 5.0,
                 likes: redis.Redis | None = None) -> None:
        """``likes``: the Redis holding the gallery's sets of liked works (``liked.py``), for
        ``liked``; not closed here."""
        self.http = InternalHttp(base_url, service_token, timeout, unavailable_code="GALLERY_UNAVAILABLE")
        self.likes = likes

    def notify(self, user_id: int, kind: str, title: str, body: str = "", data: dict[str, Any] | None = None,
               dedupe_key: str | None = None) -> bool:
        """Store and push one notification; the same ``dedupe_key`` is stored once. Best effort:
        the caller's own change has committed already, so a gallery that is down or refuses
        costs only the notice (logged, False)."""
        payload: dict[str, Any] = {"userId": user_id, "type": kind, "title": title, "body": body,
                                   "data": data or {}}
        if dedupe_key:
            payload["dedupeKey"] = dedupe_key
        try:
            self.http.post("/internal/notifications", payload, idempotent=dedupe_key is not None)
        except ServiceError as exc:
            log.warning("user %s was not notified (%s, key %s): %s %s", user_id, kind, dedupe_key,
                        exc.code, exc.message)
            return False
        return True

    def my_works(self, access_token: str) -> list[dict[str, Any]]:
        """Every work of the user whose access token is forwarded."""
        return self.http.get_all_pages("/api/works/my", access_token)

    def work(self, work_id: int, access_token: str | None) -> dict[str, Any]:
        """One work as the user whose token is forwarded sees it (``isOwner``, file URLs);
        the callee's 404/403 when it is not theirs to see."""
        return self.http.get(f"/api/works/{work_id}", access_token=access_token)["work"]

    def user_stats(self, user_id: int) -> dict[str, int]:
        """``{"works", "likesReceived"}`` of a user."""
        stats = self.http.get(f"/internal/users/{user_id}/stats")
        return {"works": int(stats["works"]), "likesReceived": int(stats["likesReceived"])}

    def liked(self, user_id: int, work_ids: list[int]) -> set[int]:
        """Which of ``work_ids`` the user likes: from the user's set in Redis when it is there
        (one SMISMEMBER), else (missing, or Redis failing) from the gallery, which reads the
        database and rebuilds the set."""
        found = self.liked_in_redis(user_id, work_ids)
        if found is not None:
            return found
        data = self.http.get(f"/internal/users/{user_id}/liked", {"workIds": ",".join(map(str, work_ids))})
        return set(data["workIds"])

    def liked_in_redis(self, user_id: int, work_ids: list[int]) -> set[int] | None:
        """Which of ``work_ids`` the user likes, from the user's set in Redis only (one
        SMISMEMBER); None when the set is missing or Redis fails."""
        if self.likes is None:
            return None
        try:
            return read_liked(self.likes, user_id, work_ids)
        except redis.RedisError as exc:
            log.warning("likes of user %s unreadable in Redis (%s)", user_id, exc.__class__.__name__)
            return None

    def media_is_public(self, key: str) -> bool:
        """Whether a media key belongs to a listed work (served without a signature)."""
        return self.http.get(f"/internal/media/{quote(key)}/access")["public"] is True

    def referenced_keys(self, keys: list[str]) -> set[str]:
        """Which of ``keys`` any work still uses."""
        return set(self.http.post("/internal/media/referenced", {"keys": keys}, idempotent=True)["referenced"])

    def close(self) -> None:
        self.http.close()
