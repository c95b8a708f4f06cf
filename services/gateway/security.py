"""Browser-facing safety defaults: response headers and request body limits."""
from __future__ import annotations

from flask import Flask, Response, request

JSON_BODY_LIMIT = 1 * 1024 * 1024
MULTIPART_BODY_LIMIT = 10 * 1024 * 1024

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "strict-origin-when-cross-origin",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": ("default-src 'self'; img-src 'self' data: blob:; "
                                "connect-src 'self' ws: wss:; frame-ancestors 'none'; "
                                "base-uri 'self'; form-action 'self'; object-src 'none'"),
}


def init_security(app: Flask) -> None:
    """Cap request bodies (10 MB multipart, 1 MB otherwise; 413 envelope) and add the headers."""
    app.config["MAX_CONTENT_LENGTH"] = MULTIPART_BODY_LIMIT

    @app.before_request
    def _limit_body() -> None:
        if request.mimetype != "multipart/form-data":
            request.max_content_length = JSON_BODY_LIMIT

    @app.after_request
    def _add_security_headers(response: Response) -> Response:
        response.headers.update(SECURITY_HEADERS)
        return response
