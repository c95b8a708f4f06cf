"""Browser-facing safety: response headers, CORS for configured origins, body limits."""
from __future__ import annotations

from flask import Flask, Response, request
from werkzeug.exceptions import RequestEntityTooLarge

from shared.errors import BadRequest, Forbidden
from shared.web import MAX_JSON_DEPTH, json_too_deep

JSON_BODY_LIMIT = 1 * 1024 * 1024
MULTIPART_BODY_LIMIT = 10 * 1024 * 1024

# The web client is a Vite-built Vue app with Element Plus: scripts and fonts come from
# the same origin, Element Plus sets inline styles, images may be data:/blob: previews,
# and live events use a WebSocket to the same host.
CONTENT_SECURITY_POLICY = "; ".join((
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self' 'unsafe-inline'",
    "img-src 'self' data: blob:",
    "font-src 'self' data:",
    "connect-src 'self' ws: wss:",
    "frame-ancestors 'none'",
    "base-uri 'self'",
    "form-action 'self'",
    "object-src 'none'",
))
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "strict-origin-when-cross-origin",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
}

CORS_METHODS = "GET, POST, PUT, PATCH, DELETE"
CORS_REQUEST_HEADERS = "Authorization, Content-Type, Accept, Accept-Language, Idempotency-Key, X-Request-ID"
CORS_EXPOSED_HEADERS = "X-Request-ID, Retry-After"
CORS_MAX_AGE = "600"


def _refuse_oversized_stream() -> None:
    """A chunked body has no length to check up front, and werkzeug stops reading it at the
    limit without complaint; buffer it (up to the limit) and refuse it if more remains."""
    limit = request.max_content_length
    if limit is not None and len(request.get_data(cache=True)) >= limit:
        if request.environ["wsgi.input"].read(1):
            raise RequestEntityTooLarge()


def init_security(app: Flask) -> None:
    """Cap request bodies (10 MB multipart, 1 MB otherwise; 413 envelope), refuse JSON nested
    beyond ``MAX_JSON_DEPTH`` before anything parses it (400 JSON_TOO_DEEP), add the headers."""
    app.config["MAX_CONTENT_LENGTH"] = MULTIPART_BODY_LIMIT

    @app.before_request
    def _limit_body() -> None:
        if request.mimetype != "multipart/form-data":
            request.max_content_length = JSON_BODY_LIMIT
        if request.content_length is None and "chunked" in request.headers.get("Transfer-Encoding", "").lower():
            _refuse_oversized_stream()
        if request.is_json and json_too_deep(request.get_data(cache=True)):
            raise BadRequest(f"JSON bodies may nest at most {MAX_JSON_DEPTH} levels deep.", code="JSON_TOO_DEEP")

    @app.after_request
    def _add_security_headers(response: Response) -> Response:
        response.headers.update(SECURITY_HEADERS)
        return response


def init_cors(app: Flask, origins: frozenset[str]) -> None:
    """Let the listed origins (exact ``scheme://host[:port]``) call the API with credentials.

    With no origins configured (the default) no CORS header is ever sent, so browsers keep
    other sites from reading any answer. A preflight from an unlisted origin gets a 403.
    """
    @app.before_request
    def _preflight() -> Response | None:
        if request.method != "OPTIONS" or "Access-Control-Request-Method" not in request.headers:
            return None
        if request.headers.get("Origin") not in origins:
            raise Forbidden("This origin may not call the API.", code="CORS_ORIGIN_DENIED")
        response = app.response_class(status=204)
        response.headers["Access-Control-Allow-Methods"] = CORS_METHODS
        response.headers["Access-Control-Allow-Headers"] = CORS_REQUEST_HEADERS
        response.headers["Access-Control-Max-Age"] = CORS_MAX_AGE
        return response

    @app.after_request
    def _allow_origin(response: Response) -> Response:
        origin = request.headers.get("Origin")
        if origin is not None and origin in origins:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Allow-Credentials"] = "true"
            response.headers["Access-Control-Expose-Headers"] = CORS_EXPOSED_HEADERS
        if origins:
            response.vary.add("Origin")
        return response
