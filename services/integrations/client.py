"""The integrations service's internal API as other services call it: a service account's
limits, for admission over HTTP (``services.render.accounts``)."""
from __future__ import annotations

from typing import Any

from shared.errors import ServiceError
from shared.internal_http import InternalHttp, Timeout, is_not_found


class IntegrationsClient:
    def __init__(self, base_url: str, service_token: str, timeout: Timeout = 5.0) -> None:
        self.http = InternalHttp(base_url, service_token, timeout, unavailable_code="INTEGRATIONS_UNAVAILABLE")

    def account_limits(self, user_id: int) -> dict[str, Any] | None:
        """``{"maxActiveJobs", "workflows", "isActive"}``; None when the user is no service account here."""
        try:
            return dict(self.http.get(f"/internal/service-accounts/{user_id}/limits"))
        except ServiceError as exc:
            if is_not_found(exc, "SERVICE_ACCOUNT_NOT_FOUND"):
                return None
            raise

    def close(self) -> None:
        self.http.close()
