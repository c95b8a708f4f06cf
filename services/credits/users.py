"""What credits asks auth about users: every user id, page by page (for init-credits)."""
from __future__ import annotations

from typing import Iterator

from shared.internal_http import InternalHttp

MAX_PAGE = 1000


class UsersClient:
    """``GET {auth_url}/internal/users/ids?after=<id>&limit=<n>`` with the service token."""

    def __init__(self, base_url: str, service_token: str, timeout: float = 10.0) -> None:
        self.http = InternalHttp(base_url, service_token, timeout, unavailable_code="AUTH_UNAVAILABLE")

    def id_pages(self, page_size: int = MAX_PAGE) -> Iterator[list[int]]:
        """Every user id in ascending pages of at most ``page_size``."""
        after = 0
        while True:
            data = self.http.get("/internal/users/ids", params={"after": after, "limit": min(page_size, MAX_PAGE)})
            ids = [int(user_id) for user_id in data["ids"]]
            if ids:
                yield ids
            if data.get("next") is None or not ids:
                return
            after = int(data["next"])

    def close(self) -> None:
        self.http.close()
