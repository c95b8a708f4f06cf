"""OpenAPI descriptions built from the routes themselves.

A view says what it takes and answers with ``@doc(...)`` (placed under the route
decorator; the view is returned unchanged, so documenting never changes behaviour).
``build_spec`` walks ``app.url_map``, so every route is listed, documented or not: an
undocumented one carries ``x-undocumented: true``. Bodies and query strings come from
the marshmallow schemas the views load (apispec's marshmallow plugin), and every answer
is described inside the platform's envelope.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Literal, Mapping, TypeVar

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Flask, current_app, jsonify
from marshmallow import Schema

from shared.db import MAX_ID

OPENAPI_VERSION = "3.0.3"
API_VERSION = "0.1.0"  # the project's version (pyproject.toml)
BEARER = "bearerAuth"
SERVICE_TOKEN = "serviceToken"
SERVICE_TOKEN_REQUIRED = "SERVICE_TOKEN_REQUIRED"
# healthz/readyz stay open for probes, metrics for Prometheus (shared.web.init_service_app); every
# other path needs the token.
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
IGNORED_METHODS = frozenset({"HEAD", "OPTIONS"})

Auth = Literal["none", "optional", "user", "admin"]
SchemaLike = type[Schema] | Schema
View = TypeVar("View", bound=Callable[..., Any])

STATUS_TEXT = {
    200: "OK", 201: "Created", 202: "Accepted", 204: "No content",
    400: "Malformed request (e.g. a body that is not JSON)",
    401: "No valid access token (missing, expired, tampered or revoked)",
    402: "Not enough credits", 403: "Not allowed", 404: "Not found", 409: "Conflicts with the current state",
    413: "Body too large", 422: "Invalid fields", 429: "Rate limited", 503: "A dependency is unavailable",
}
_RULE_ARGUMENT = re.compile(r"<(?:(?P<converter>\w+)(?:\([^)]*\))?:)?(?P<name>\w+)>")
_CONVERTER_SCHEMAS: dict[str, dict[str, Any]] = {
    "int": {"type": "integer"},
    "float": {"type": "number"},
    "id": {"type": "integer", "format": "int64", "minimum": 1, "maximum": MAX_ID},  # shared.web.IdConverter
}


@dataclass(frozen=True)
class Operation:
    """What one view takes and answers; read by ``build_spec``."""

    summary: str
    auth: Auth = "none"
    body: SchemaLike | None = None
    query: SchemaLike | None = None
    response: SchemaLike | None = None
    status: int = 200
    errors: Mapping[int, str] = field(default_factory=dict)
    description: str = ""
    multipart: Mapping[str, str] = field(default_factory=dict)  # file field -> description
    raw_body: str = ""  # a JSON body validated without a schema: what it holds
    content_type: str = "application/json"  # of the success answer; anything else is not enveloped
    scope: str | None = None  # the API-token scope the view states (shared.tokens.require_user(scope=...))


# The routes shared.web.init_service_app adds to every app.
BUILTIN_OPERATIONS = {
    "healthz": Operation("The process is alive"),
    "readyz": Operation("Every required dependency answers", errors={503: "NOT_READY"}),
    "metrics": Operation("Prometheus metrics (text exposition; METRICS_TOKEN as a bearer when set)",
                         content_type="text/plain", errors={401: "METRICS_TOKEN_REQUIRED"}),
}


def doc(summary: str, *, auth: Auth = "none", body: SchemaLike | None = None, query: SchemaLike | None = None,
        response: SchemaLike | None = None, status: int = 200, errors: Mapping[int, str] | Iterable[int] = (),
        description: str = "", multipart: Mapping[str, str] | None = None, raw_body: str = "",
        content_type: str = "application/json", scope: str | None = None) -> Callable[[View], View]:
    """Record how a view is called. ``errors``: the statuses it may answer besides those
    implied by ``auth`` (401, and 403 for admins and API tokens) and by a body or query
    (400, 422), each with the error codes or the case it covers. ``scope``: the API-token
    scope the view states; without one, a view that reads the caller refuses API tokens."""
    error_map = dict(errors) if isinstance(errors, Mapping) else {status_: "" for status_ in errors}
    operation = Operation(summary, auth, body, query, response, status, error_map, description,
                          dict(multipart or {}), raw_body, content_type, scope)

    def record(view: View) -> View:
        view.__openapi__ = operation  # type: ignore[attr-defined]
        return view

    return record


def _schema_name(schema: SchemaLike) -> str:
    cls = schema if isinstance(schema, type) else type(schema)
    name = cls.__name__
    return name[: -len("Schema")] or name if name.endswith("Schema") else name


def _openapi_path(rule: str) -> tuple[str, list[dict[str, Any]]]:
    parameters = [{"name": match["name"], "in": "path", "required": True,
                   "schema": dict(_CONVERTER_SCHEMAS.get(match["converter"] or "", {"type": "string"}))}
                  for match in _RULE_ARGUMENT.finditer(rule)]
    return _RULE_ARGUMENT.sub(lambda match: "{" + match["name"] + "}", rule), parameters


def _envelope(data: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": ["success", "data"],
            "properties": {"success": {"type": "boolean", "enum": [True]}, "data": data}}


def _security(auth: Auth, service_token: bool, path: str) -> list[dict[str, list[str]]]:
    token = {SERVICE_TOKEN: []} if service_token and path not in OPEN_PATHS else {}
    if auth == "none":
        return [token]
    signed_in = {**token, BEARER: []}
    return [signed_in, token] if auth == "optional" else [signed_in]


class _SpecBuilder:
    def __init__(self, title: str, version: str, description: str, service_token: bool) -> None:
        self.plugin = MarshmallowPlugin(schema_name_resolver=_schema_name)
        self.spec = APISpec(title=title, version=version, openapi_version=OPENAPI_VERSION,
                            plugins=[self.plugin], info={"description": description})
        self.service_token = service_token
        self.spec.components.security_scheme(BEARER, {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                                                      "description": "The access token auth signs (RS256), or an API token "
                                                                     "(`pat_…`), which the gateway exchanges for one."})
        if service_token:
            self.spec.components.security_scheme(SERVICE_TOKEN, {
                "type": "apiKey", "in": "header", "name": "X-Service-Token",
                "description": "The platform's service token; the gateway and the worker add it."})
        self.spec.components.schema("Error", {
            "type": "object", "required": ["success", "error"],
            "properties": {"success": {"type": "boolean", "enum": [False]}, "error": {
                "type": "object", "required": ["code", "message", "details"],
                "properties": {"code": {"type": "string"}, "message": {"type": "string"}, "details": {}}}}})

    def schema_ref(self, schema: SchemaLike) -> dict[str, Any]:
        return self.plugin.converter.resolve_nested_schema(schema)

    def operation(self, path: str, method: str, endpoint: str, op: Operation | None) -> dict[str, Any]:
        if op is None:
            return {"summary": endpoint, "tags": [endpoint.split(".")[0]], "x-undocumented": True,
                    "security": _security("none", self.service_token, path), "responses": {
                        "default": {"description": "Not documented yet."}}}
        operation: dict[str, Any] = {"summary": op.summary, "operationId": endpoint, "tags": [endpoint.split(".")[0]],
                                     "security": _security(op.auth, self.service_token, path)}
        description = [op.description] if op.description else []
        if op.scope is not None:
            operation["x-api-token-scope"] = op.scope
            description.append(f"API tokens (`pat_…`) need the scope `{op.scope}`.")
        elif op.auth != "none":
            description.append("Not with an API token (`pat_…`): a signed-in session only.")
        if description:
            operation["description"] = " ".join(description)
        if op.query is not None:
            operation["parameters"] = self.plugin.converter.schema2parameters(op.query, location="query")
        if op.body is not None:
            operation["requestBody"] = {"required": True, "content": {
                "application/json": {"schema": self.schema_ref(op.body)}}}
        elif op.raw_body:
            operation["requestBody"] = {"required": True, "description": op.raw_body,
                                        "content": {"application/json": {"schema": {"type": "object"}}}}
        elif op.multipart:
            operation["requestBody"] = {"required": True, "content": {"multipart/form-data": {"schema": {
                "type": "object", "required": list(op.multipart)[:1],
                "properties": {name: {"type": "string", "format": "binary", "description": text}
                               for name, text in op.multipart.items()}}}}}
        operation["responses"] = self.responses(op, path)
        return operation

    def responses(self, op: Operation, path: str) -> dict[str, Any]:
        if op.content_type == "application/json":
            data = self.schema_ref(op.response) if op.response is not None else {"type": "object"}
            success = {"application/json": {"schema": _envelope(data)}}
        else:
            success = {op.content_type: {"schema": {"type": "string", "format": "binary"}}}
        responses: dict[str, Any] = {str(op.status): {"description": STATUS_TEXT.get(op.status, "Success"),
                                                       "content": success}}
        codes: dict[int, list[str]] = {}
        if op.body is not None or op.raw_body:
            codes[400] = ["INVALID_JSON"]
        if op.body is not None or op.query is not None or op.raw_body or op.multipart:
            codes[422] = ["VALIDATION_ERROR"]
        if op.auth != "none":
            codes[401] = (["NO_TOKEN"] if op.auth != "optional" else []) + [
                "TOKEN_EXPIRED", "TOKEN_INVALID", "TOKEN_REVOKED"]
        if op.auth == "admin":
            codes[403] = ["ADMIN_REQUIRED"]
        if op.auth != "none":
            codes.setdefault(403, []).append("INSUFFICIENT_SCOPE")
        if self.service_token and path not in OPEN_PATHS:
            codes.setdefault(403, []).append(SERVICE_TOKEN_REQUIRED)
        for status, text in op.errors.items():
            listed = codes.setdefault(status, [])
            listed += [code for code in text.split(", ") if code and code not in listed]
        for status in sorted(codes):
            responses[str(status)] = error_response(status, codes[status])
        return responses


def error_response(status: int, codes: list[str]) -> dict[str, Any]:
    """An error answer; ``x-error-codes`` lists the envelope's ``error.code`` values it may carry."""
    text = STATUS_TEXT.get(status, "Error")
    response: dict[str, Any] = {"description": f"{text}: {', '.join(codes)}" if codes else text, "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    if codes:
        response["x-error-codes"] = codes
    return response


def build_spec(app: Flask, title: str, version: str, *, description: str = "", service_token: bool = False,
               include: Callable[[str, str], bool] | None = None) -> dict[str, Any]:
    """The OpenAPI 3 document of every route of ``app`` (static files aside).

    ``service_token``: every path but /healthz, /readyz and /metrics requires ``X-Service-Token``.
    ``include(path, endpoint)`` keeps only the routes it accepts.
    """
    builder = _SpecBuilder(title, version, description, service_token)
    paths: dict[str, tuple[list[dict[str, Any]], dict[str, Any]]] = {}
    for rule in sorted(app.url_map.iter_rules(), key=lambda rule: rule.rule):
        if rule.endpoint == "static" or rule.endpoint.endswith(".static"):
            continue
        if include is not None and not include(rule.rule, rule.endpoint):
            continue
        path, parameters = _openapi_path(rule.rule)
        op = getattr(app.view_functions[rule.endpoint], "__openapi__", None) or BUILTIN_OPERATIONS.get(rule.endpoint)
        operations = paths.setdefault(path, (parameters, {}))[1]
        for method in sorted((rule.methods or set()) - IGNORED_METHODS):
            operations[method.lower()] = builder.operation(path, method, rule.endpoint, op)
    for path, (parameters, operations) in paths.items():
        builder.spec.path(path=path, operations=operations, parameters=parameters or None)
    return builder.spec.to_dict()


def spec_response(title: str, version: str = API_VERSION, description: str = ""):
    """The current app's spec as JSON, built once per app (its routes do not change)."""
    spec = current_app.extensions.get("openapi_spec")
    if spec is None:
        spec = build_spec(current_app, title, version, description=description, service_token=True)
        current_app.extensions["openapi_spec"] = spec
    return jsonify(spec)
