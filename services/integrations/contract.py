"""The queue API's message contract (version 1, ``docs/queue-api.md``): queue names, the
checks a request message passes before it is admitted, and the replies and dead letters the
bridge publishes. The JSON Schemas in ``docs/schemas/`` are the contract; requests are
validated against the published one itself, so the documents and the code cannot drift.

A message that cannot be answered safely (too large, unsigned, signed with an unknown key or
a wrong signature, not JSON, or without a usable ``requestId``) goes to the dead-letter queue
with its reason. Anything else is answered on the account's reply queue.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any, Mapping

from jsonschema import Draft202012Validator

from shared.config import PROJECT_ROOT
from shared.web import MAX_JSON_DEPTH, json_too_deep
from services.integrations.signing import verify_body

VERSION = 1
SCHEMAS = PROJECT_ROOT / "docs" / "schemas"
KEY_HEADER = "x-key-id"
SIGNATURE_HEADER = "x-signature"
DEAD_LETTER_BODY_CHARS = 4096
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,100}")

# Dead-letter reasons.
OVERSIZED = "OVERSIZED"
UNSIGNED = "UNSIGNED"
UNKNOWN_KEY = "UNKNOWN_KEY"
BAD_SIGNATURE = "BAD_SIGNATURE"
MALFORMED = "MALFORMED"
INVALID_REQUEST = "INVALID_REQUEST"
DEAD_LETTER_REASONS = (OVERSIZED, UNSIGNED, UNKNOWN_KEY, BAD_SIGNATURE, MALFORMED, INVALID_REQUEST)


@dataclass(frozen=True)
class QueueNames:
    """Every queue of the API hangs off one prefix (``QUEUE_API_PREFIX``) and one direct exchange."""

    prefix: str

    @property
    def exchange(self) -> str:
        return self.prefix

    @property
    def dead_letter(self) -> str:
        return f"{self.prefix}.dead-letter"

    def requests(self, account: str) -> str:
        return f"{self.prefix}.{account}.requests"

    def replies(self, account: str) -> str:
        return f"{self.prefix}.{account}.replies"

    def reply_allowed(self, account: str, reply_to: str) -> bool:
        """An account's replies go to its reply queue or a sub-queue of it, never elsewhere."""
        own = self.replies(account)
        return reply_to == own or (reply_to.startswith(own + ".") and bool(REQUEST_ID.fullmatch(reply_to[len(own) + 1:])))


@lru_cache(maxsize=None)
def schema(name: str) -> dict[str, Any]:
    return json.loads((SCHEMAS / name).read_text(encoding="utf-8"))


@lru_cache(maxsize=None)
def _validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(schema(name))


def schema_errors(name: str, document: Any) -> dict[str, list[str]]:
    """What is wrong with ``document`` under the schema ``name``, by JSON path ({} when valid)."""
    errors: dict[str, list[str]] = {}
    for error in _validator(name).iter_errors(document):
        path = ".".join(str(part) for part in error.absolute_path) or "_schema"
        errors.setdefault(path, []).append(error.message[:300])
    return errors


@dataclass(frozen=True)
class Request:
    """A verified request, ready for admission."""

    request_id: str
    workflow: str
    params: dict[str, Any]
    expected_cost: int | None
    reply_to: str
    metadata: dict[str, Any] | None
    progress: bool

    def admission_body(self) -> dict[str, Any]:
        """The body ``POST /api/generate`` would receive."""
        body = {**self.params, "workflow": self.workflow}
        if self.expected_cost is not None:
            body["expectedCost"] = self.expected_cost
        return body


@dataclass(frozen=True)
class DeadLetter:
    reason: str
    detail: str
    key_id: str | None = None


@dataclass(frozen=True)
class Rejection:
    """A request that can be answered, but not admitted."""

    request_id: str
    reply_to: str
    metadata: dict[str, Any] | None
    code: str
    message: str
    details: Any = None


def read_request(body: bytes, headers: dict[str, Any], account: str, keys: Mapping[str, str],
                 names: QueueNames, max_bytes: int) -> Request | DeadLetter | Rejection:
    """Check one message of ``account``'s request queue, in the order the documentation gives.
    ``keys`` are the account's accepted signing keys (id → secret): the current one, and the
    one before it during a rotation's grace period."""
    presented_key, signature = headers.get(KEY_HEADER), headers.get(SIGNATURE_HEADER)
    if len(body) > max_bytes:
        return DeadLetter(OVERSIZED, f"{len(body)} bytes; the limit is {max_bytes}.", _text(presented_key))
    if not isinstance(presented_key, str) or not isinstance(signature, str):
        return DeadLetter(UNSIGNED, f"The headers {KEY_HEADER} and {SIGNATURE_HEADER} are required.",
                          _text(presented_key))
    if presented_key not in keys:
        return DeadLetter(UNKNOWN_KEY, f"{presented_key[:64]!r} is not the current key of this queue's account.",
                          presented_key[:64])
    key_id = presented_key
    if not verify_body(keys[key_id], body, signature):
        return DeadLetter(BAD_SIGNATURE, "The signature does not match the body.", key_id)
    if json_too_deep(body):  # the parser would recurse until RecursionError, and the message come back forever
        return DeadLetter(MALFORMED, f"The body nests deeper than {MAX_JSON_DEPTH} levels.", key_id)
    try:
        document = json.loads(body)
    except ValueError as exc:  # also invalid UTF-8
        return DeadLetter(MALFORMED, f"The body is not JSON: {exc}"[:500], key_id)
    request_id = document.get("requestId") if isinstance(document, dict) else None
    if not isinstance(request_id, str) or not REQUEST_ID.fullmatch(request_id):
        return DeadLetter(INVALID_REQUEST, "No usable requestId (1 to 100 of A-Z a-z 0-9 . _ : -).", key_id)
    metadata = document.get("metadata") if isinstance(document.get("metadata"), dict) else None
    reply_to = document.get("replyTo")
    if isinstance(reply_to, str) and not names.reply_allowed(account, reply_to):
        return Rejection(request_id, names.replies(account), metadata, "REPLY_TO_NOT_ALLOWED",
                         f"replyTo must be {names.replies(account)} or a queue under it.")
    reply_to = reply_to if isinstance(reply_to, str) else names.replies(account)
    errors = schema_errors("queue-request.v1.json", document)
    if errors:
        return Rejection(request_id, reply_to, metadata, "VALIDATION_ERROR", "Some fields are invalid.", errors)
    return Request(request_id, document["workflow"], document["params"], document.get("expectedCost"), reply_to,
                   metadata, bool(document.get("progress", False)))


def _text(value: Any) -> str | None:
    return value[:64] if isinstance(value, str) else None


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def reply(kind: str, request_id: str, job_id: str | None, metadata: Any, data: dict[str, Any],
          message_id: str | None = None) -> dict[str, Any]:
    """One reply message; ``messageId`` is stable, so a reply sent twice is recognised."""
    return {"version": VERSION, "type": kind, "messageId": message_id or f"{request_id}:{kind}",
            "requestId": request_id, "jobId": job_id, "ts": now_iso(), "metadata": metadata, "data": data}


def rejection_reply(rejection: Rejection, status: int | None = None) -> dict[str, Any]:
    retryable = status in (429, 503) or rejection.code in ("ADMISSION_BUSY", "RENDER_UNAVAILABLE")
    return reply("request.rejected", rejection.request_id, None, rejection.metadata, {
        "error": {"code": rejection.code, "message": rejection.message, "details": rejection.details},
        "retryable": retryable})


def dead_letter_message(letter: DeadLetter, queue: str, headers: dict[str, Any], body: bytes) -> dict[str, Any]:
    text = body.decode("utf-8", errors="replace")
    return {"version": VERSION, "reason": letter.reason, "detail": letter.detail, "queue": queue,
            "receivedAt": now_iso(), "headers": {str(k): _plain(v) for k, v in headers.items()},
            "body": text[:DEAD_LETTER_BODY_CHARS], "bodyTruncated": len(text) > DEAD_LETTER_BODY_CHARS}


def _plain(value: Any) -> Any:
    return value if isinstance(value, (str, int, float, bool)) or value is None else str(value)
