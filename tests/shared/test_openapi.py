"""OpenAPI: the spec built from a small app, each service's own spec, and the gateway's merged
spec and docs page, with the real auth, credits and gallery apps served over HTTP."""
from __future__ import annotations

import re
import threading
from typing import Any, Iterator

import pytest
from flask import Flask
from marshmallow import Schema, fields, validate
from werkzeug.serving import make_server

from services.auth.app import create_app as create_auth_app
from services.auth.config import load_config as load_auth_config
from services.credits.app import create_app as create_credits_app
from services.gallery.app import create_app as create_gallery_app
from services.gateway.app import create_app as create_gateway_app
from services.integrations.app import create_app as create_integrations_app
from services.safety.app import create_app as create_safety_app
from services.gateway.config import load_config as load_gateway_config
from services.gateway.proxy import ROUTES
from shared.config import load_settings
from shared.errors import ok
from shared.openapi import build_spec, doc
from shared.tokens import ensure_dev_keys
from shared.web import init_service_app
from tests.conftest import TEST_SERVICE_TOKEN

SERVICE_HEADERS = {"X-Service-Token": TEST_SERVICE_TOKEN}
SERVICES = ("auth", "credits", "gallery", "integrations", "safety")


class ThingSchema(Schema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=20))
    size = fields.Integer(data_key="sizeInBytes", strict=True)


class ThingQuerySchema(Schema):
    page_size = fields.Integer(data_key="pageSize", load_default=20)


def small_app(settings) -> Flask:
    app = Flask("small")
    init_service_app(app, settings, internal=True)

    @app.post("/api/things")
    @doc("Make a thing", auth="user", scope="generate", body=ThingSchema, response=ThingSchema, status=201,
         errors={409: "THING_EXISTS"})
    def make_thing():
        return ok({}, 201)

    @app.get("/api/things/<int:thing_id>")
    @doc("One thing", auth="optional", query=ThingQuerySchema)
    def get_thing(thing_id: int):
        return ok({})

    @app.delete("/api/things/<path:key>")
    def forgotten(key: str):
        return ok({})

    return app


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs(value)


def assert_refs_resolve(spec: dict[str, Any]) -> None:
    schemas = spec["components"]["schemas"]
    for ref in refs(spec):
        assert ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[1] in schemas, ref


def operations(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method != "parameters":
                yield path, method, operation


def test_build_spec_describes_documented_routes_and_lists_undocumented_ones(settings):
    spec = build_spec(small_app(settings), "Small", "1.2.3", service_token=True)

    assert spec["openapi"].startswith("3.") and spec["info"]["version"] == "1.2.3"
    make = spec["paths"]["/api/things"]["post"]
    assert make["summary"] == "Make a thing"
    assert make["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Thing"}
    assert spec["components"]["schemas"]["Thing"]["properties"]["sizeInBytes"]["type"] == "integer"
    assert spec["components"]["schemas"]["Thing"]["required"] == ["name"]
    data = make["responses"]["201"]["content"]["application/json"]["schema"]["properties"]["data"]
    assert data == {"$ref": "#/components/schemas/Thing"}
    assert make["responses"]["409"]["x-error-codes"] == ["THING_EXISTS"]
    assert make["responses"]["401"]["x-error-codes"][0] == "NO_TOKEN"
    assert make["responses"]["403"]["x-error-codes"] == ["INSUFFICIENT_SCOPE", "SERVICE_TOKEN_REQUIRED"]
    assert make["x-api-token-scope"] == "generate" and "need the scope `generate`" in make["description"]
    assert set(make["responses"]) == {"201", "400", "401", "403", "409", "422"}
    assert make["security"] == [{"serviceToken": [], "bearerAuth": []}]

    one = spec["paths"]["/api/things/{thing_id}"]
    assert one["parameters"] == [{"name": "thing_id", "in": "path", "required": True, "schema": {"type": "integer"}}]
    assert [p["name"] for p in one["get"]["parameters"]] == ["pageSize"]
    assert one["get"]["security"] == [{"serviceToken": [], "bearerAuth": []}, {"serviceToken": []}]
    assert "x-api-token-scope" not in one["get"], "no scope stated: API tokens are refused"
    assert one["get"]["description"] == "Not with an API token (`pat_…`): a signed-in session only."

    forgotten = spec["paths"]["/api/things/{key}"]["delete"]
    assert forgotten["x-undocumented"] is True
    assert spec["paths"]["/healthz"]["get"]["security"] == [{}]  # open to probes
    assert spec["paths"]["/readyz"]["get"]["responses"]["503"]["x-error-codes"] == ["NOT_READY"]
    assert_refs_resolve(spec)


@pytest.fixture(scope="module")
def env(tmp_path_factory, redis_url, keys_dir) -> dict[str, str]:
    """Apps only: nothing here reads a table, so an unmigrated SQLite file is enough."""
    data = tmp_path_factory.mktemp("openapi")
    env = {"APP_ENV": "test", "DATA_DIR": str(data / "data"), "DATABASE_URL": f"sqlite:///{data / 'unused.db'}",
           "REDIS_URL": redis_url, "SERVICE_TOKEN": TEST_SERVICE_TOKEN,
           "JWT_PRIVATE_KEY_PATH": str(keys_dir / "jwt_private.pem"),
           "JWT_PUBLIC_KEY_PATH": str(keys_dir / "jwt_public.pem")}
    settings = load_settings(env)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    ensure_dev_keys(settings)
    return env


@pytest.fixture(scope="module")
def service_apps(env) -> Iterator[dict[str, Flask]]:
    settings = load_settings(env)
    apps = {"auth": create_auth_app(settings, load_auth_config(settings, env)), "credits": create_credits_app(settings),
            "gallery": create_gallery_app(settings), "integrations": create_integrations_app(settings),
            "safety": create_safety_app(settings)}
    yield apps
    for app in apps.values():
        db = app.extensions.get("db") or app.extensions["gallery"].db
        db.dispose()


class Served:
    def __init__(self, app: Flask) -> None:
        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def gateway(env, service_apps, unique) -> Iterator[tuple[Flask, dict[str, Served]]]:
    served = {name: Served(app) for name, app in service_apps.items()}
    gateway_env = {**env, "AUTH_URL": served["auth"].url, "CREDITS_URL": served["credits"].url,
                   "GALLERY_URL": served["gallery"].url, "INTEGRATIONS_URL": served["integrations"].url,
                   "SAFETY_URL": served["safety"].url, "RATE_LIMIT_NAMESPACE": f"ratelimit-openapi-{unique}"}
    app = create_gateway_app(settings := load_settings(gateway_env), load_gateway_config(settings, gateway_env))
    yield app, served
    app.extensions["gateway_openapi"].services.close()
    app.extensions["gateway_proxy"].close()
    app.extensions["gateway_probes"].close()
    app.extensions["render"].db.dispose()
    app.extensions["redis"].close()
    for server in served.values():
        server.stop()


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_documents_every_route_behind_the_service_token(service_apps, service):
    client = service_apps[service].test_client()
    assert client.get("/openapi.json").status_code == 403
    response = client.get("/openapi.json", headers=SERVICE_HEADERS)
    assert response.status_code == 200
    spec = response.get_json()

    undocumented = [(method, path) for path, method, operation in operations(spec) if operation.get("x-undocumented")]
    assert undocumented == []
    rules = {(method.lower(), re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule))
             for rule in service_apps[service].url_map.iter_rules() if rule.endpoint != "static"
             for method in rule.methods - {"HEAD", "OPTIONS"}}
    assert {(method, path) for path, method, _ in operations(spec)} == rules
    assert any(path.startswith("/internal/") for path in spec["paths"])
    assert_refs_resolve(spec)


def routed_service(path: str) -> str | None:
    """The service the gateway's proxy sends ``path`` to (the longest matching prefix)."""
    matches = [(len(prefix), service) for prefix, service in ROUTES
               if path == prefix or path.startswith(prefix + "/")]
    return max(matches)[1] if matches else None


def test_the_gateway_merges_the_public_paths_of_every_service(gateway):
    app, _ = gateway
    response = app.test_client().get("/api/openapi.json")
    assert response.status_code == 200
    spec = response.get_json()

    assert "did not answer" not in spec["info"]["description"]
    assert not [path for path in spec["paths"] if not path.startswith("/api/")]
    assert set(spec["components"]["securitySchemes"]) == {"bearerAuth"}
    for path, method, operation in operations(spec):
        assert not operation.get("x-undocumented"), (method, path)
        assert all("serviceToken" not in requirement for requirement in operation["security"])
        assert "SERVICE_TOKEN_REQUIRED" not in operation["responses"].get("403", {}).get("x-error-codes", [])
        tag = operation["tags"][0]
        if tag in SERVICES:  # a proxied path really reaches the service that documents it
            assert routed_service(path) == tag, path
            assert "SERVICE_UNAVAILABLE" in operation["responses"]["503"]["x-error-codes"]
        else:
            assert routed_service(path) is None, path
    tags = {operation["tags"][0] for _, _, operation in operations(spec)}
    assert set(SERVICES) | {"render", "health", "openapi"} <= tags
    register = spec["paths"]["/api/users/register"]["post"]
    assert register["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/auth.Register"}
    assert register["security"] == [{}]
    assert spec["paths"]["/api/works/{work_id}"]["get"]["security"] == [{"bearerAuth": []}, {}]
    assert spec["paths"]["/api/admin/credits/grant"]["post"]["responses"]["403"]["x-error-codes"] == [
        "ADMIN_REQUIRED", "INSUFFICIENT_SCOPE"]
    # API tokens: the scope of every route that takes one; account routes (tokens among them) never do.
    assert spec["paths"]["/api/generate"]["post"]["x-api-token-scope"] == "generate"
    assert spec["paths"]["/api/webhooks"]["post"]["x-api-token-scope"] == "webhooks"
    assert spec["paths"]["/api/users/credits"]["get"]["x-api-token-scope"] == "credits:read"
    for path, method in (("/api/tokens", "post"), ("/api/users/password", "put"), ("/api/users/profile", "put")):
        operation = spec["paths"][path][method]
        assert "x-api-token-scope" not in operation and "Not with an API token" in operation["description"], path
        assert "INSUFFICIENT_SCOPE" in operation["responses"]["403"]["x-error-codes"], path
    assert "/api/generate" in spec["paths"] and "/api/models" in spec["paths"]
    assert {"gallery.SaveWork", "credits.Hold", "auth.Register"} <= set(spec["components"]["schemas"])
    assert_refs_resolve(spec)


def test_a_service_that_is_down_is_left_out_with_a_note(gateway):
    app, served = gateway
    client = app.test_client()
    first = client.get("/api/openapi.json").get_json()
    served["gallery"].stop()

    cached = client.get("/api/openapi.json").get_json()
    assert cached == first  # within the cache time nothing is fetched again

    app.extensions["gateway_openapi"].ttl = 0
    fresh = client.get("/api/openapi.json")
    assert fresh.status_code == 200
    spec = fresh.get_json()
    assert "Not included right now (the service did not answer): gallery" in spec["info"]["description"]
    assert not any(path.startswith("/api/works") for path in spec["paths"])
    assert "/api/users/register" in spec["paths"] and "/api/credits/pricing" in spec["paths"]
    assert_refs_resolve(spec)


def fetched(client, path: str):
    """A response whose file body is read and closed (the test client leaves files open)."""
    with client.get(path) as response:
        response.get_data()
        return response


def test_the_docs_page_loads_only_same_origin_assets_under_the_csp(gateway):
    app, _ = gateway
    client = app.test_client()
    page = fetched(client, "/api/docs")
    assert page.status_code == 200 and page.mimetype == "text/html"
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    html = page.get_data(as_text=True)
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert "/api/docs/assets/docs.js" in assets and "/api/docs/assets/docs.css" in assets
    assert all(asset.startswith("/api/") for asset in assets)
    assert "<script>" not in html and "style=" not in html  # nothing inline

    script = fetched(client, "/api/docs/assets/docs.js")
    assert script.status_code == 200 and script.mimetype in ("text/javascript", "application/javascript")
    source = script.get_data(as_text=True)
    assert 'fetch("/api/openapi.json"' in source
    assert "innerHTML" not in source and "http" not in source.replace("HTTP ", "")
    assert fetched(client, "/api/docs/assets/docs.css").status_code == 200
