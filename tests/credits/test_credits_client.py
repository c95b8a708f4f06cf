"""CreditsClient against the credits app served over real HTTP."""
from __future__ import annotations

import pytest

from shared.embedded import free_port
from shared.errors import ServiceError, ServiceUnavailable
from services.credits.client import CreditsClient


def test_client_round_trip_and_errors(credits_server, settings, new_user_id, job_id):
    client = CreditsClient(credits_server, settings.service_token)
    user_id = new_user_id()
    assert client.open_account(user_id) == {"available": 500, "held": 0}
    assert client.hold(user_id, job_id, 30, "two images") == {"jobId": job_id, "amount": 30,
                                                             "available": 470, "held": 30}
    assert client.capture(job_id, 15, f"capture:{job_id}:0") == {"jobId": job_id, "captured": 15, "remaining": 15}
    assert client.release(job_id, f"release:{job_id}") == {"jobId": job_id, "released": 15, "remaining": 0}

    with pytest.raises(ServiceError) as short:
        client.hold(user_id, job_id + "-big", 1000, "too much")
    assert (short.value.status, short.value.code) == (402, "INSUFFICIENT_CREDITS")
    assert short.value.details == {"available": 485, "required": 1000, "shortfall": 515}

    with pytest.raises(ServiceError) as forbidden:
        CreditsClient(credits_server, "wrong-token").open_account(user_id)
    assert (forbidden.value.status, forbidden.value.code) == (403, "SERVICE_TOKEN_REQUIRED")
    client.close()


def test_client_reports_an_unreachable_service():
    client = CreditsClient(f"http://127.0.0.1:{free_port()}", "token", timeout=1.0)
    with pytest.raises(ServiceUnavailable):
        client.open_account(1)
