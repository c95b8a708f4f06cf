"""The auth service's internal API as other services call it: the user directory, the
exchange of API tokens (the gateway) and service accounts' users (integrations)."""
from __future__ import annotations

from typing import Any, Iterator

from shared.errors import ServiceError
from shared.internal_http import InternalHttp, Timeout, is_not_found

MAX_ID_PAGE = 1000


class AuthClient:
    def __init__(self, base_url: str, service_token: str, timeout: Timeout = 5.0) -> None:
        self.http = InternalHttp(base_url, service_token, timeout, unavailable_code="AUTH_UNAVAILABLE")

    def user(self, user_id: int) -> dict[str, Any] | None:
        """The directory entry (``id, username, displayName, avatarUrl, role, isActive``, …); None for an unknown user."""
        try:
            return dict(self.http.get(f"/internal/users/{user_id}"))
        except ServiceError as exc:
            if is_not_found(exc, "USER_NOT_FOUND"):
                return None
            raise

    def users(self, user_ids: list[int]) -> dict[int, dict[str, Any]]:
        """Directory entries of up to 100 users in one call, by id; unknown users are left out."""
        if not user_ids:
            return {}
        data = self.http.get("/internal/users", params={"ids": ",".join(str(i) for i in user_ids)})
        return {int(entry["id"]): dict(entry) for entry in data["items"]}

    def user_id_pages(self, page_size: int = MAX_ID_PAGE) -> Iterator[list[int]]:
        """Every user id in ascending pages of at most ``page_size``."""
        after = 0
        while True:
            data = self.http.get("/internal/users/ids", params={"after": after, "limit": min(page_size, MAX_ID_PAGE)})
            ids = [int(user_id) for user_id in data["ids"]]
            if ids:
                yield ids
            if data.get("next") is None or not ids:
                return
            after = int(data["next"])

    def exchange_token(self, token: str) -> dict[str, Any]:
        """``{"accessToken", "expiresAt", "tokenId", "userId", "scopes"}`` for a valid API token;
        the callee's 401 (TOKEN_INVALID, TOKEN_EXPIRED, TOKEN_REVOKED) otherwise."""
        return dict(self.http.post("/internal/tokens/exchange", {"token": token}))

    def create_service_account(self, username: str) -> dict[str, Any]:
        """The service account's user (created if missing); 409 USERNAME_TAKEN for a person's name."""
        return dict(self.http.post("/internal/service-accounts", {"username": username})["user"])

    def close(self) -> None:
        self.http.close()
