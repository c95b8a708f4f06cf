"""The credits service's API as other services call it: accounts, holds, captures and
releases (auth, render admission, the render worker), a user's ledger (auth's export), and
an administrator's grants and account view (integrations, for service accounts' budgets)."""
from __future__ import annotations

from typing import Any

from shared.internal_http import InternalHttp, Timeout


class CreditsClient:
    def __init__(self, base_url: str, service_token: str, timeout: Timeout = 5.0) -> None:
        self.http = InternalHttp(base_url, service_token, timeout, unavailable_code="CREDITS_UNAVAILABLE")

    def open_account(self, user_id: int, signup_bonus: bool = True) -> dict:
        """``{"available", "held"}``; opens the account with the signup bonus if missing (a
        service account's without it)."""
        return self.http.post("/internal/accounts", {"userId": user_id, "signupBonus": signup_bonus},
                              idempotent=True)  # key signup_bonus:<user>

    def grant(self, user_id: int, amount: int, reason: str, idempotency_key: str | None, access_token: str) -> dict:
        """An administrator's grant (their access token is forwarded: the ledger names them)."""
        body: dict[str, Any] = {"userId": user_id, "amount": amount, "reason": reason}
        if idempotency_key is not None:
            body["idempotencyKey"] = idempotency_key
        return self.http.post("/api/admin/credits/grant", body, access_token)

    def account(self, user_id: int, access_token: str) -> dict[str, Any] | None:
        """An account's balances and lifetime totals, read as an administrator; None if it has none."""
        items = self.http.get("/api/admin/credits/accounts", {"userId": user_id}, access_token)["items"]
        return items[0] if items else None

    def balances(self, user_ids: list[int]) -> dict[int, dict[str, int]]:
        """``{user id: {"available", "held"}}`` of those of ``user_ids`` (at most 100) that have an account."""
        data = self.http.get("/internal/accounts", params={"userIds": ",".join(str(i) for i in user_ids)})
        return {int(item["userId"]): {"available": int(item["available"]), "held": int(item["held"])}
                for item in data["items"]}

    def hold(self, user_id: int, job_id: str, workflow: str, images: int, description: str = "",
             expected_cost: int | None = None) -> dict:
        """Reserve price(workflow) × images for a job: ``{"jobId", "amount", "pricePerImage",
        "available", "held"}``. 402 INSUFFICIENT_CREDITS, 409 PRICE_CHANGED when
        ``expected_cost`` is not the current cost, 422 UNKNOWN_WORKFLOW."""
        body: dict[str, Any] = {"userId": user_id, "jobId": job_id, "workflow": workflow, "images": images,
                                "description": description}
        if expected_cost is not None:
            body["expectedCost"] = expected_cost
        return self.http.post("/internal/holds", body, idempotent=True)  # key hold:<job>

    def capture(self, job_id: str, idempotency_key: str, images: int = 1) -> dict:
        """Spend ``images`` delivered images of the job's hold at the price the hold was
        admitted at: ``{"jobId", "captured", "remaining"}`` (credits). 409 HOLD_EXCEEDED,
        HOLD_SETTLED, IDEMPOTENCY_CONFLICT (the key was used with another image count)."""
        return self.http.post(f"/internal/holds/{job_id}/capture",
                              {"images": images, "idempotencyKey": idempotency_key}, idempotent=True)

    def settle(self, job_id: str, idempotency_key: str, images: int) -> dict:
        """Settle a finished job in one movement: charge its ``images`` delivered images in all
        (those captured already count), return the rest of the hold and close it:
        ``{"jobId", "captured", "released", "remaining"}`` (credits this call moved). 409
        HOLD_SETTLED (settled otherwise), IDEMPOTENCY_CONFLICT (the key with another count)."""
        return self.http.post(f"/internal/holds/{job_id}/settle",
                              {"images": images, "idempotencyKey": idempotency_key}, idempotent=True)

    def release(self, job_id: str, idempotency_key: str) -> dict:
        return self.http.post(f"/internal/holds/{job_id}/release", {"idempotencyKey": idempotency_key},
                              idempotent=True)

    def transactions(self, access_token: str) -> list[dict[str, Any]]:
        """The whole ledger of the user whose access token is forwarded, newest first."""
        return self.http.get_all_pages("/api/users/credits/transactions", access_token)

    def pricing(self) -> dict:
        """``{"pricing": {workflow: price per image}, "currency": "credits"}``."""
        return self.http.get("/api/credits/pricing")

    def close(self) -> None:
        self.http.close()
