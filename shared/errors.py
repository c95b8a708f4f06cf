"""Domain errors and the one JSON envelope every service answers with.

Success: ``{"success": true, "data": ...}``.
Failure: ``{"success": false, "error": {"code", "message", "details"}}``.
"""
from __future__ import annotations

import logging
from typing import Any

from flask import Flask, jsonify
from marshmallow import ValidationError
from sqlalchemy.exc import DBAPIError
from werkzeug.exceptions import HTTPException

from shared.db import is_disconnect

log = logging.getLogger(__name__)


class ServiceError(Exception):
    """An error whose HTTP status, stable code and message are known where it is raised."""

    status = 400
    code = "BAD_REQUEST"
    message = "The request could not be processed."

    def __init__(self, message: str | None = None, *, code: str | None = None,
                 status: int | None = None, details: Any = None) -> None:
        self.message = message or self.message
        self.code = code or self.code
        self.status = status or self.status
        self.details = details
        super().__init__(self.message)


class BadRequest(ServiceError):
    status, code, message = 400, "BAD_REQUEST", "The request is malformed."


class Unauthorized(ServiceError):
    status, code, message = 401, "UNAUTHORIZED", "Sign in to continue."


class Forbidden(ServiceError):
    status, code, message = 403, "FORBIDDEN", "You may not do this."


class NotFound(ServiceError):
    status, code, message = 404, "NOT_FOUND", "Not found."


class Conflict(ServiceError):
    status, code, message = 409, "CONFLICT", "This conflicts with the current state."


class PaymentRequired(ServiceError):
    status, code, message = 402, "INSUFFICIENT_CREDITS", "Not enough credits."


class Unprocessable(ServiceError):
    status, code, message = 422, "VALIDATION_ERROR", "Some fields are invalid."


class ServiceUnavailable(ServiceError):
    status, code, message = 503, "SERVICE_UNAVAILABLE", "A required service is unavailable; try again shortly."


def ok(data: Any = None, status: int = 200):
    return jsonify({"success": True, "data": data}), status


def error_response(status: int, code: str, message: str, details: Any = None):
    body = {"success": False, "error": {"code": code, "message": message, "details": details}}
    return jsonify(body), status


_HTTP_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "CONFLICT",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    429: "RATE_LIMITED",
}


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ServiceError)
    def _service_error(exc: ServiceError):
        return error_response(exc.status, exc.code, exc.message, exc.details)

    @app.errorhandler(ValidationError)
    def _validation_error(exc: ValidationError):
        return error_response(422, "VALIDATION_ERROR", "Some fields are invalid.", exc.messages)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        status = exc.code or 500
        code = _HTTP_CODES.get(status, "HTTP_ERROR")
        return error_response(status, code, exc.description or exc.name)

    @app.errorhandler(DBAPIError)
    def _database_error(exc: DBAPIError):
        if is_disconnect(exc):
            log.warning("the database connection was lost; the pool reconnects")
            return error_response(503, "DATABASE_RECONNECTED", "The database connection was renewed; try again.")
        log.exception("database error")
        return error_response(500, "INTERNAL_ERROR", "Something went wrong on our side.")

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unhandled error")
        return error_response(500, "INTERNAL_ERROR", "Something went wrong on our side.")
