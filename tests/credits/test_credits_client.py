"""CreditsClient against the credits app served over real HTTP."""
from __future__ import annotations

import pytest

from shared.embedded import free_port
from shared.errors import ServiceError, ServiceUnavailable
from services.credits.client import CreditsClient


def test_client_round_trip_and_errors(credits_server, settings, new_user_id, job_id):
    client = CreditsClient(credits_server, settings.service_token)
    user_id = new_user_id()
    assert client.pricing()["pricing"]["upscale"] == 10
    assert client.open_account(user_id) == {"available": 500, "held": 0}
    assert client.hold(user_id, job_id, "text2img", 2, "two images", expected_cost=30) == {
        "jobId": job_id, "amount": 30, "pricePerImage": 15, "available": 470, "held": 30}
    assert client.capture(job_id, f"capture:{job_id}:0") == {"jobId": job_id, "captured": 15, "remaining": 15}
    assert client.release(job_id, f"release:{job_id}") == {"jobId": job_id, "released": 15, "remaining": 0}

    with pytest.raises(ServiceError) as changed:
        client.hold(user_id, job_id + "-c", "upscale", 1, expected_cost=15)
    assert (changed.value.status, changed.value.code) == (409, "PRICE_CHANGED")
    assert changed.value.details == {"expectedCost": 15, "cost": 10, "pricePerImage": 10}

    for index in range(2):
        client.hold(user_id, f"{job_id}-{index}", "text2img", 16)
    with pytest.raises(ServiceError) as short:
        client.hold(user_id, job_id + "-big", "text2img", 2)
    assert (short.value.status, short.value.code) == (402, "INSUFFICIENT_CREDITS")
    assert short.value.details == {"available": 5, "required": 30, "shortfall": 25}

    with pytest.raises(ServiceError) as forbidden:
        CreditsClient(credits_server, "wrong-token").open_account(user_id)
    assert (forbidden.value.status, forbidden.value.code) == (403, "SERVICE_TOKEN_REQUIRED")
    client.close()


def test_client_reports_an_unreachable_service():
    client = CreditsClient(f"http://127.0.0.1:{free_port()}", "token", timeout=1.0)
    with pytest.raises(ServiceUnavailable) as down:
        client.open_account(1)
    assert down.value.code == "CREDITS_UNAVAILABLE"
