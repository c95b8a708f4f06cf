"""The movement routes and the signed-in balance read answered in front of Flask
(``services/credits/fast_path.py``) give exactly the answers Flask gives: the same statuses,
envelopes, error codes and details, the request id echoed, the requests counted under the
route's rule; everything else, every refusal of the balance read included, is Flask's."""
from __future__ import annotations

import json
import re
import time
import uuid

import jwt

import pytest
from prometheus_client import REGISTRY
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy import create_engine, select, text
from werkzeug.test import Client
from werkzeug.wrappers import Response

from services.credits.fast_path import BalanceFastPath, MovementsFastPath
from services.credits.models import CreditHold
from shared.tokens import revoked_token_key, revoked_user_key
from tests.credits.conftest import SERVICE_TOKEN

TOKEN = {"X-Service-Token": SERVICE_TOKEN}


def _scenario(send, user_id: int, job: str) -> list[tuple]:
    """Every kind of answer of the four routes, in an order where each step's answer is
    fixed by the steps before it; ``send(path, body, headers=TOKEN)`` returns a response."""
    hold = {"userId": user_id, "jobId": job, "workflow": "text2img", "images": 2, "description": "x"}
    steps = [
        ("/internal/holds", hold, {}),  # no service token
        ("/internal/holds", hold, {"X-Service-Token": "wrong"}),
        ("/internal/holds", hold, {"X-Service-Token": "t\u00f6k\u00e9n"}),  # any Latin-1 character: still a 403
        (f"/internal/holds/{job}/settle", {"images": 1, "idempotencyKey": "k"}, {"X-Service-Token": "wrong"}),
        ("/internal/holds", "{not json", TOKEN),
        ("/internal/holds", "null", TOKEN),
        ("/internal/holds", "[" * 70 + "]" * 70, TOKEN),  # nested too deep
        ("/internal/holds", [hold], TOKEN),
        ("/internal/holds", {**hold, "extra": 1}, TOKEN),
        ("/internal/holds", {**hold, "images": "2"}, TOKEN),
        ("/internal/holds", {**hold, "workflow": "nope"}, TOKEN),
        ("/internal/holds", {**hold, "expectedCost": 31}, TOKEN),  # PRICE_CHANGED
        (f"/internal/holds/{job}/capture", {"idempotencyKey": f"capture:{job}"}, TOKEN),  # no such hold yet
        (f"/internal/holds/{job}/settle", {"images": 1, "idempotencyKey": f"settle:{job}"}, TOKEN),
        (f"/internal/holds/{job}/release", {"idempotencyKey": f"release:{job}"}, TOKEN),
        ("/internal/holds", hold, TOKEN),  # 201
        ("/internal/holds", hold, TOKEN),  # 200: the replay
        ("/internal/holds", {**hold, "images": 3}, TOKEN),  # IDEMPOTENCY_CONFLICT
        ("/internal/holds", {**hold, "jobId": f"{job}-b", "images": 16}, TOKEN),
        ("/internal/holds", {**hold, "jobId": f"{job}-c", "images": 16}, TOKEN),  # 402: 30 + 240 held of 500
        (f"/internal/holds/{job}/capture", {"idempotencyKey": f"capture:{job}"}, TOKEN),
        (f"/internal/holds/{job}/capture", {"images": 2, "idempotencyKey": f"capture:{job}"}, TOKEN),  # conflict
        (f"/internal/holds/{job}/settle", {"images": 3, "idempotencyKey": f"settle:{job}"}, TOKEN),  # exceeded
        (f"/internal/holds/{job}/settle", {"images": 0, "idempotencyKey": f"settle:{job}"}, TOKEN),  # captured
        (f"/internal/holds/{job}/settle", {"images": "1", "idempotencyKey": f"settle:{job}"}, TOKEN),  # 422
        (f"/internal/holds/{job}/settle", {"images": 1, "idempotencyKey": f"settle:{job}"}, TOKEN),
        (f"/internal/holds/{job}/settle", {"images": 1, "idempotencyKey": f"settle:{job}"}, TOKEN),  # replay
        (f"/internal/holds/{job}/settle", {"images": 2, "idempotencyKey": f"settle:{job}"}, TOKEN),  # conflict
        (f"/internal/holds/{job}/release", {"idempotencyKey": f"release:{job}"}, TOKEN),  # settled: 0
        (f"/internal/holds/{job}-b/release", {"idempotencyKey": f"release:{job}-b"}, TOKEN),
    ]
    answers = []
    for path, body, headers in steps:
        response = send(path, body if isinstance(body, str) else json.dumps(body), headers)
        answers.append((path.replace(job, "<job>"), response.status_code,
                        json.loads(response.get_data(as_text=True).replace(job, "<job>"))))
    return answers


def _sender(client: Client):
    def send(path: str, body: str, headers: dict) -> Response:
        return client.post(path, data=body, headers={**headers, "Content-Type": "application/json"})
    return send


def test_the_lean_path_answers_what_flask_answers(credits_app, new_user_id, job_id):
    assert isinstance(credits_app.wsgi_app, MovementsFastPath)
    lean = _scenario(_sender(credits_app.test_client()), new_user_id(), job_id)
    flask_only = _scenario(_sender(Client(credits_app.wsgi_app.app, Response)), new_user_id(), f"{job_id}-f")
    assert lean == flask_only
    statuses = [status for _path, status, _body in lean]
    assert statuses == [403, 403, 403, 403, 400, 400, 400, 422, 422, 422, 422, 409, 404, 404, 404, 201, 200, 409,
                        201, 402, 200, 409, 409, 409, 422, 200, 200, 409, 200, 200]
    codes = [body["error"]["code"] for _path, _status, body in lean if not body["success"]]
    assert codes == ["SERVICE_TOKEN_REQUIRED"] * 4 + ["INVALID_JSON"] * 3 + ["VALIDATION_ERROR"] * 3 + [
        "UNKNOWN_WORKFLOW", "PRICE_CHANGED", "HOLD_NOT_FOUND", "HOLD_NOT_FOUND", "HOLD_NOT_FOUND",
        "IDEMPOTENCY_CONFLICT", "INSUFFICIENT_CREDITS", "IDEMPOTENCY_CONFLICT", "HOLD_EXCEEDED", "HOLD_CAPTURED",
        "VALIDATION_ERROR", "IDEMPOTENCY_CONFLICT"]
    settled = lean[25][2]["data"]
    assert settled == {"jobId": "<job>", "captured": 0, "released": 15, "remaining": 0} == lean[26][2]["data"]


def test_the_four_routes_never_reach_flask_and_the_rest_always_does(credits_app, new_user_id, job_id):
    reached = []

    def flask(wsgi_env, start_response):
        reached.append((wsgi_env["REQUEST_METHOD"], wsgi_env["PATH_INFO"]))
        start_response("204 NO CONTENT", [])
        return [b""]

    client = Client(MovementsFastPath(flask, credits_app.extensions["credits"], SERVICE_TOKEN), Response)
    user_id = new_user_id()
    credits_app.extensions["credits"].open_account(user_id)
    body = {"userId": user_id, "jobId": job_id, "workflow": "text2img", "images": 1}
    assert client.post("/internal/holds", json=body, headers=TOKEN).status_code == 201
    for route in ("capture", "settle", "release"):
        assert client.post(f"/internal/holds/{job_id}/{route}", json={"images": 1, "idempotencyKey": route},
                           headers=TOKEN).status_code in (200, 409, 422)
    refused = client.post("/internal/holds", json=body, headers={"X-Service-Token": "t\u00f6k\u00e9n"})
    assert (refused.status_code, refused.get_json()["error"]["code"]) == (403, "SERVICE_TOKEN_REQUIRED")
    assert reached == []

    client.get("/internal/holds", headers=TOKEN)  # another method
    client.post("/internal/holds/", json=body, headers=TOKEN)  # another path (Flask redirects)
    client.post(f"/internal/holds/{job_id}/refund", json={}, headers=TOKEN)
    client.post("/internal/holds", data="{}", headers={**TOKEN, "Content-Type": "text/plain"})
    client.post("/internal/accounts", json={"userId": user_id}, headers=TOKEN)
    assert [path for _method, path in reached] == ["/internal/holds", "/internal/holds/",
                                                   f"/internal/holds/{job_id}/refund", "/internal/holds",
                                                   "/internal/accounts"]


def test_the_request_id_is_echoed_and_the_request_counted_under_its_rule(client, credits, new_user_id, job_id):
    user_id = new_user_id()
    credits.open_account(user_id)
    rule = "/internal/holds/<job_id>/settle"

    def counted(status: str) -> float:
        return REGISTRY.get_sample_value("http_requests_total", {"service": "credits", "method": "POST",
                                                                 "route": rule, "status": status}) or 0.0

    before = counted("200"), counted("404")
    client.post("/internal/holds", json={"userId": user_id, "jobId": job_id, "workflow": "text2img", "images": 1},
                headers=TOKEN)
    settled = client.post(f"/internal/holds/{job_id}/settle", json={"images": 1, "idempotencyKey": "s"},
                          headers={**TOKEN, "X-Request-ID": "job-42.settle"})
    missing = client.post(f"/internal/holds/{job_id}-x/settle", json={"images": 1, "idempotencyKey": "s"},
                          headers={**TOKEN, "X-Request-ID": "not a valid id"})
    assert settled.status_code == 200 and settled.headers["X-Request-ID"] == "job-42.settle"
    assert missing.status_code == 404 and re.fullmatch(r"[0-9a-f]{32}", missing.headers["X-Request-ID"])
    assert settled.headers["Content-Type"] == "application/json"
    assert (counted("200"), counted("404")) == (before[0] + 1, before[1] + 1)


def test_an_unexpected_error_is_the_same_500_envelope(credits_app, monkeypatch, job_id):
    def explode(*_args, **_kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(credits_app.extensions["credits"], "release", explode)
    answers = []
    for client in (credits_app.test_client(), Client(credits_app.wsgi_app.app, Response)):
        response = client.post(f"/internal/holds/{job_id}/release", json={"idempotencyKey": "r"}, headers=TOKEN)
        answers.append((response.status_code, response.get_json()))
    assert answers[0] == answers[1] == (500, {"success": False, "error": {
        "code": "INTERNAL_ERROR", "message": "Something went wrong on our side.", "details": None}})


def test_a_refused_movement_leaves_no_transaction_or_lock_behind(credits, database_url, new_user_id, job_id):
    """The pool does not roll a returned connection back (credits' engine): a unit of work
    that fails after locking the hold must have ended its transaction itself."""
    user_id = new_user_id()
    credits.open_account(user_id)
    credits.hold(user_id, job_id, "text2img", 1)
    for _ in range(3):  # every pooled connection has had a refused settle
        with pytest.raises(Exception, match="pays for 1 images"):
            credits.settle(job_id, f"settle:{job_id}", 5)
    other = create_engine(database_url)
    try:  # a lock left behind would time this UPDATE out within 2 s
        with other.begin() as connection:
            if other.dialect.name == "mysql":
                connection.execute(text("SET SESSION innodb_lock_wait_timeout = 2"))
            else:
                connection.exec_driver_sql("PRAGMA busy_timeout = 2000")
            connection.execute(CreditHold.__table__.update().where(CreditHold.job_id == job_id)
                               .values(expires_at=None))
    finally:
        other.dispose()
    assert credits.settle(job_id, f"settle:{job_id}", 1)["captured"] == 15
    with credits.db.read() as session:
        assert session.scalar(select(CreditHold.status).where(CreditHold.job_id == job_id)) == "settled"


# The signed-in balance read (``BalanceFastPath``)

def _signed(settings, user_id: int, scopes: list[str] | None = None) -> str:
    """An access token as auth signs one; with ``scopes``, one exchanged for an API token."""
    now = int(time.time())
    claims = {"sub": str(user_id), "username": f"u{user_id}", "role": "user", "type": "access",
              "jti": uuid.uuid4().hex, "iat": now, "exp": now + 900}
    if scopes is not None:
        claims.update(scopes=scopes, pat=uuid.uuid4().hex)
    return jwt.encode(claims, settings.jwt_private_key_path.read_text(), algorithm="RS256")


def _balance_path(credits_app, flask) -> Client:
    return Client(BalanceFastPath(flask, credits_app.extensions["credits"], SERVICE_TOKEN,
                                  credits_app.extensions["verified_tokens"], credits_app.extensions["redis"]),
                  Response)


def _flask_only(credits_app) -> Client:
    return Client(credits_app.wsgi_app.app.app, Response)


def test_a_remembered_token_s_balance_is_answered_in_front_of_flask_as_flask_answers(credits_app, settings,
                                                                                     new_user_id):
    user_id = new_user_id()
    credits_app.extensions["credits"].open_account(user_id)
    headers = {**TOKEN, "Authorization": f"Bearer {_signed(settings, user_id)}"}
    by_flask = _flask_only(credits_app).get("/api/users/credits", headers=headers)  # verifies and remembers
    reached = []

    def flask(wsgi_env, start_response):
        reached.append(wsgi_env["PATH_INFO"])
        start_response("204 NO CONTENT", [])
        return [b""]

    def counted() -> float:
        return REGISTRY.get_sample_value("http_requests_total", {"service": "credits", "method": "GET",
                                                                 "route": "/api/users/credits",
                                                                 "status": "200"}) or 0.0

    before = counted()
    lean = _balance_path(credits_app, flask).get("/api/users/credits", headers={**headers, "X-Request-ID": "r-1"})
    assert reached == []
    assert (lean.status_code, lean.get_json()) == (by_flask.status_code, by_flask.get_json()) == (
        200, {"success": True, "data": {"available": 500, "held": 0}})
    assert lean.headers["X-Request-ID"] == "r-1" and lean.headers["Content-Type"] == "application/json"
    assert counted() == before + 1
    scoped = f"Bearer {_signed(settings, user_id, ['works:read', 'credits:read'])}"
    _flask_only(credits_app).get("/api/users/credits", headers={**TOKEN, "Authorization": scoped})
    assert _balance_path(credits_app, flask).get("/api/users/credits", headers={
        **TOKEN, "Authorization": scoped}).get_json()["data"] == {"available": 500, "held": 0}
    assert reached == []


def test_anything_the_balance_read_might_refuse_goes_to_flask(credits_app, settings, new_user_id, monkeypatch):
    user_id = new_user_id()
    tokens = {name: _signed(settings, user_id, scopes) for name, scopes in
              [("remembered", None), ("unscoped API", ["works:read"]), ("signed out", None),
               ("user revoked", None), ("unremembered", None)]}
    for name in ("remembered", "unscoped API", "signed out", "user revoked"):
        _flask_only(credits_app).get("/api/users/credits", headers={**TOKEN, "Authorization": f"Bearer {tokens[name]}"})
    redis = credits_app.extensions["redis"]
    redis.set(revoked_token_key(jwt.decode(tokens["signed out"], options={"verify_signature": False})["jti"]), "1",
              ex=60)
    reached = []

    def flask(wsgi_env, start_response):
        reached.append(wsgi_env.get("HTTP_AUTHORIZATION", "-"))
        start_response("204 NO CONTENT", [])
        return [b""]

    client = _balance_path(credits_app, flask)
    remembered = f"Bearer {tokens['remembered']}"
    sent = [(name, client.get("/api/users/credits", headers={**TOKEN, "Authorization": f"Bearer {token}"}))
            for name, token in tokens.items() if name not in ("remembered", "user revoked")]
    redis.set(revoked_user_key(user_id), str(time.time() + 1), ex=60)  # disabled after every token was issued
    sent.append(("user revoked", client.get("/api/users/credits",
                                            headers={**TOKEN, "Authorization": f"Bearer {tokens['user revoked']}"})))
    redis.delete(revoked_user_key(user_id))
    client.get("/api/users/credits", headers=TOKEN)  # no token
    client.get("/api/users/credits", headers={"X-Service-Token": "wrong", "Authorization": remembered})
    client.get("/api/users/credits", headers={**TOKEN, "Authorization": "bearer " + tokens["remembered"]})
    client.head("/api/users/credits", headers={**TOKEN, "Authorization": remembered})
    client.get("/api/users/credits/", headers={**TOKEN, "Authorization": remembered})
    assert len(reached) == 9
    answered = client.get("/api/users/credits", headers={**TOKEN, "Authorization": remembered})
    assert answered.status_code == 200 and len(reached) == 9

    def unreachable(*_args, **_kwargs):
        raise RedisConnectionError("down")

    monkeypatch.setattr(redis, "mget", unreachable)
    client.get("/api/users/credits", headers={**TOKEN, "Authorization": remembered})
    assert all(response.status_code == 204 for _name, response in sent)
    assert len(reached) == 10


def test_the_refusals_of_the_balance_read_are_flask_s(credits_app, client, settings, new_user_id, monkeypatch):
    user_id = new_user_id()
    token, unscoped = _signed(settings, user_id), _signed(settings, user_id, ["works:read"])

    def balance(bearer: str) -> tuple[int, str | None]:
        response = client.get("/api/users/credits", headers={**TOKEN, "Authorization": f"Bearer {bearer}"})
        body = response.get_json()
        return response.status_code, None if body["success"] else body["error"]["code"]

    assert [balance(token), balance(token)] == [(200, None), (200, None)]
    assert [balance(unscoped), balance(unscoped)] == [(403, "INSUFFICIENT_SCOPE")] * 2
    redis = credits_app.extensions["redis"]

    def unreachable(*_args, **_kwargs):
        raise RedisConnectionError("down")

    with monkeypatch.context() as patched:
        patched.setattr(redis, "mget", unreachable)
        assert balance(token) == (503, "REVOCATION_CHECK_UNAVAILABLE")
    redis.set(revoked_token_key(jwt.decode(token, options={"verify_signature": False})["jti"]), "1", ex=60)
    assert balance(token) == (401, "TOKEN_REVOKED")
    assert client.get("/api/users/credits", headers={"Authorization": f"Bearer {unscoped}"}).status_code == 403
