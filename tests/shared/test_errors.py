import pytest
from flask import Flask
from marshmallow import Schema, fields

from shared import errors
from shared.web import load_json


class _Body(Schema):
    name = fields.String(required=True)


@pytest.fixture
def client():
    app = Flask(__name__)
    errors.register_error_handlers(app)

    @app.post("/raise/<name>")
    def raise_named(name):
        raise getattr(errors, name)()

    @app.post("/body")
    def body():
        return errors.ok(load_json(_Body()))

    @app.get("/crash")
    def crash():
        raise ZeroDivisionError

    return app.test_client()


@pytest.mark.parametrize("name, status, code", [
    ("BadRequest", 400, "BAD_REQUEST"),
    ("Unauthorized", 401, "UNAUTHORIZED"),
    ("PaymentRequired", 402, "INSUFFICIENT_CREDITS"),
    ("Forbidden", 403, "FORBIDDEN"),
    ("NotFound", 404, "NOT_FOUND"),
    ("Conflict", 409, "CONFLICT"),
    ("Unprocessable", 422, "VALIDATION_ERROR"),
    ("ServiceUnavailable", 503, "SERVICE_UNAVAILABLE"),
])
def test_each_error_class_answers_its_status_in_the_envelope(client, name, status, code):
    response = client.post(f"/raise/{name}")
    assert response.status_code == status
    body = response.get_json()
    assert body["success"] is False
    assert body["error"]["code"] == code and body["error"]["message"]
    assert "details" in body["error"]


def test_schema_errors_are_422_with_field_details(client):
    response = client.post("/body", json={"name": 3, "extra": True})
    assert response.status_code == 422
    assert set(response.get_json()["error"]["details"]) == {"name", "extra"}


def test_a_body_that_is_not_json_is_400(client):
    response = client.post("/body", data="not json", content_type="text/plain")
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "INVALID_JSON"


def test_unknown_routes_and_crashes_still_answer_the_envelope(client):
    assert client.get("/nowhere").get_json()["error"]["code"] == "NOT_FOUND"
    crashed = client.get("/crash")
    assert crashed.status_code == 500
    assert crashed.get_json()["error"]["code"] == "INTERNAL_ERROR"


def test_json_nested_too_deep_is_malformed_json_not_a_crash():
    from shared.config import load_settings
    from shared.web import init_service_app, json_too_deep

    assert json_too_deep("[" * 65 + "]" * 65) and not json_too_deep("[" * 64 + "]" * 64)
    assert not json_too_deep('["' + "[" * 500 + '"]')  # brackets inside a string do not nest
    app = Flask("deep")
    init_service_app(app, load_settings({"APP_ENV": "test", "SERVICE_TOKEN": "t"}), internal=False)

    @app.post("/body")
    def body():
        return errors.ok(load_json(_Body()))

    response = app.test_client().post("/body", data="[" * 100_000 + "]" * 100_000, content_type="application/json")
    assert (response.status_code, response.get_json()["error"]["code"]) == (400, "INVALID_JSON")
