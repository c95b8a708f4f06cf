"""The queue API's contract without a broker: the order of the checks a request passes, the
published JSON Schemas, signatures (the platform's and the client's agree), queue names, and
the webhook URL guard."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
import requests
from flask import Flask, request
from aigc_queue_client import sign, verify_webhook
from jsonschema import Draft202012Validator

from services.integrations.bridge import Account, accepted_keys
from services.integrations.config import IntegrationsConfig
from services.integrations.contract import (SCHEMAS, DeadLetter, QueueNames, Rejection, Request, read_request,
                                            rejection_reply, reply, schema, schema_errors)
from services.integrations.deliveries import Deliveries
from services.integrations.signing import QUEUE_KEY, WEBHOOK_KEY, SigningKeys, verify_body, webhook_signature
from services.integrations.ssrf import UrlRefused, check_url, public_only_session
from tests.conftest import serve

NAMES = QueueNames("queue-api")
KEYS = SigningKeys(b"x" * 32)
KEY_ID = "qk_0123456789abcdef01234567"
SECRET = KEYS.secret(KEY_ID)
GOOD = {"version": 1, "requestId": "r-1", "workflow": "text2img", "params": {"prompt": "a fox"}}


def read(document=GOOD, *, body: bytes | None = None, headers: dict | None = None, max_bytes: int = 65536):
    body = json.dumps(document).encode() if body is None else body
    headers = {"x-key-id": KEY_ID, "x-signature": sign(SECRET, body)} if headers is None else headers
    return read_request(body, headers, "banners", {KEY_ID: SECRET}, NAMES, max_bytes)


def test_every_published_schema_is_a_valid_json_schema():
    names = sorted(path.name for path in SCHEMAS.glob("*.json"))
    assert names == ["queue-dead-letter.v1.json", "queue-reply.v1.json", "queue-request.v1.json",
                     "webhook-event.v1.json"]
    for name in names:
        Draft202012Validator.check_schema(schema(name))


def test_a_good_request_becomes_the_body_of_post_api_generate():
    verdict = read({**GOOD, "expectedCost": 15, "metadata": {"sku": 1}, "progress": True})
    assert isinstance(verdict, Request)
    assert verdict.admission_body() == {"prompt": "a fox", "workflow": "text2img", "expectedCost": 15}
    assert verdict.reply_to == "queue-api.banners.replies" and verdict.metadata == {"sku": 1} and verdict.progress


@pytest.mark.parametrize("case, reason", [
    ({"body": b"x" * 65537}, "OVERSIZED"),
    ({"headers": {}}, "UNSIGNED"),
    ({"headers": {"x-key-id": KEY_ID}}, "UNSIGNED"),
    ({"headers": {"x-key-id": "qk_other", "x-signature": "v1=00"}}, "UNKNOWN_KEY"),
    ({"headers": {"x-key-id": KEY_ID, "x-signature": sign("qsec_wrong", json.dumps(GOOD).encode())}}, "BAD_SIGNATURE"),
    ({"body": b"{nope"}, "MALFORMED"),
    ({"body": b"\xff\xfe"}, "MALFORMED"),
    ({"body": b'{"requestId": "r-1", "params": ' + b"[" * 30_000 + b"]" * 30_000 + b"}"}, "MALFORMED"),  # too deep
    ({"document": {**GOOD, "requestId": "has spaces"}}, "INVALID_REQUEST"),
    ({"document": [GOOD]}, "INVALID_REQUEST"),
])
def test_messages_that_cannot_be_answered_are_dead_letters(case, reason):
    verdict = read(case.get("document", GOOD), body=case.get("body"), headers=case.get("headers"))
    assert isinstance(verdict, DeadLetter) and verdict.reason == reason, verdict


def test_the_size_is_checked_before_anything_else():
    assert read(body=b"x" * 100, headers={}, max_bytes=10).reason == "OVERSIZED"


@pytest.mark.parametrize("document, code", [
    ({**GOOD, "params": "prompt"}, "VALIDATION_ERROR"),
    ({**GOOD, "version": 2}, "VALIDATION_ERROR"),
    ({**GOOD, "extra": 1}, "VALIDATION_ERROR"),
    ({**GOOD, "expectedCost": 0}, "VALIDATION_ERROR"),
    ({**GOOD, "replyTo": "queue-api.other.replies"}, "REPLY_TO_NOT_ALLOWED"),
    ({**GOOD, "replyTo": "queue-api.banners.replies.x y"}, "REPLY_TO_NOT_ALLOWED"),
])
def test_signed_requests_with_mistakes_are_answered_with_a_rejection(document, code):
    verdict = read(document)
    assert isinstance(verdict, Rejection) and verdict.code == code and verdict.request_id == "r-1"
    assert verdict.reply_to == "queue-api.banners.replies"
    message = rejection_reply(verdict, 422)
    assert not schema_errors("queue-reply.v1.json", message) and message["data"]["retryable"] is False


def test_a_sub_queue_of_the_accounts_reply_queue_may_take_the_replies():
    assert read({**GOOD, "replyTo": "queue-api.banners.replies.night"}).reply_to == "queue-api.banners.replies.night"
    assert NAMES.requests("banners") == "queue-api.banners.requests" and NAMES.dead_letter == "queue-api.dead-letter"


def test_replies_follow_the_published_schema():
    image = {"index": 0, "url": "http://h/media/a.png?exp=1&sig=2", "thumbnailUrl": "http://h/t.webp", "width": 64,
             "height": 64, "sha256": "ab", "expiresAt": "2026-01-01T00:00:00Z"}
    good = [reply("request.accepted", "r", "j", None, {"cost": 15, "pricePerImage": 15, "images": 1,
                                                        "queuePosition": 0, "estimatedStartSeconds": 0.0}),
            reply("job.succeeded", "r", "j", {"a": 1}, {"jobId": "j", "charged": 15, "images": [image]}),
            reply("job.failed", "r", "j", None, {"charged": 0, "refunded": 15,
                                                  "error": {"code": "NO_OUTPUT", "message": "x", "class": "system"}}),
            reply("request.duplicate", "r", None, None, {"status": "admitted", "firstReceivedAt": "2026"})]
    for message in good:
        assert not schema_errors("queue-reply.v1.json", message), message
    broken = reply("job.succeeded", "r", "j", None, {"charged": 15, "images": [{"index": 0}]})
    assert schema_errors("queue-reply.v1.json", broken)


def test_signatures_of_the_platform_and_of_the_client_agree():
    body = b'{"a": 1}'
    assert verify_body(SECRET, body, sign(SECRET, body))
    assert not verify_body(SECRET, body + b" ", sign(SECRET, body))
    assert not verify_body(SECRET, body, "v1=\u00e9" + sign(SECRET, body)[4:])  # any header text: refused, no error
    assert KEYS.secret(KEY_ID) == SECRET and SigningKeys(b"y" * 32).secret(KEY_ID) != SECRET
    assert SECRET.startswith("qsec_") and KEYS.new_key_id(QUEUE_KEY).startswith("qk_")
    hook_key = KEYS.new_key_id(WEBHOOK_KEY)
    secret = KEYS.secret(hook_key)
    header = webhook_signature(secret, 1_700_000_000, body)
    headers = {"X-Webhook-Signature": header}
    assert verify_webhook(secret, headers, body, now=1_700_000_100)
    assert not verify_webhook(secret, headers, body, now=1_700_000_400), "too old: a replayed delivery"
    assert not verify_webhook(secret, headers, b'{"a": 2}', now=1_700_000_100)
    assert not verify_webhook(secret, {}, body)
    forged = {"X-Webhook-Signature": header.replace("t=1700000000", "t=²")}
    assert not verify_webhook(secret, forged, body, now=1_700_000_100), "a digit int() does not read"


@pytest.mark.parametrize("url", ["http://127.0.0.1/hook", "http://10.1.2.3/", "http://192.168.0.1:8080/",
                                 "http://[::1]/", "http://169.254.169.254/latest", "http://0.0.0.0/",
                                 "http://[::ffff:127.0.0.1]/", "ftp://93.184.216.34/", "http://u:p@93.184.216.34/",
                                 "http:///nohost", "http://no-such-host.invalid/"])
def test_webhooks_may_not_target_private_addresses(url):
    with pytest.raises(UrlRefused):
        check_url(url, allow_private=False)


def test_public_addresses_and_allowed_private_ones_pass():
    check_url("https://93.184.216.34/hooks/render", allow_private=False)
    check_url("http://127.0.0.1:9000/hook", allow_private=True)


def test_a_delivery_connection_refuses_a_private_address_even_when_dns_passed_the_check():
    """DNS rebinding: the name checked public, then resolves to 127.0.0.1 when the delivery
    connects. The connection itself refuses the peer before anything is sent."""
    received: list[bytes] = []
    app = Flask("receiver")

    @app.post("/hook")
    def hook():
        received.append(request.get_data())
        return "", 204

    running = serve(app)
    try:
        with pytest.raises(requests.ConnectionError, match="not a public address"):
            public_only_session(allow_private=False).post(f"{running.url}/hook", data=b"secret", timeout=5)
        assert received == []
        allowed = public_only_session(allow_private=True).post(f"{running.url}/hook", data=b"ok", timeout=5)
        assert allowed.status_code == 204 and received == [b"ok"]
    finally:
        running.stop()


def test_a_rotated_key_is_accepted_until_its_grace_period_ends():
    new_key = KEYS.new_key_id(QUEUE_KEY)
    expires = datetime(2026, 12, 4, 12, 0, tzinfo=timezone.utc)
    account = Account(1, "banners", {new_key: KEYS.secret(new_key), KEY_ID: SECRET}, KEY_ID, expires, 8, None, 3600,
                      "batch")
    body = json.dumps(GOOD).encode()
    old_headers = {"x-key-id": KEY_ID, "x-signature": sign(SECRET, body)}
    new_headers = {"x-key-id": new_key, "x-signature": sign(KEYS.secret(new_key), body)}
    during = accepted_keys(account, now=expires - timedelta(seconds=1))
    after = accepted_keys(account, now=expires)
    assert isinstance(read_request(body, old_headers, "banners", during, NAMES, 65536), Request)
    assert isinstance(read_request(body, new_headers, "banners", during, NAMES, 65536), Request)
    refused = read_request(body, old_headers, "banners", after, NAMES, 65536)
    assert isinstance(refused, DeadLetter) and refused.reason == "UNKNOWN_KEY"
    assert isinstance(read_request(body, new_headers, "banners", after, NAMES, 65536), Request)
    forged = {"x-key-id": KEY_ID, "x-signature": sign(KEYS.secret(new_key), body)}  # the new secret, the old id
    assert read_request(body, forged, "banners", during, NAMES, 65536).reason == "BAD_SIGNATURE"


def test_failed_deliveries_back_off_exponentially_to_an_hour_within_the_day():
    config = IntegrationsConfig(secret=b"x" * 32, public_url="http://127.0.0.1")  # the defaults: 30 s, a day
    deliveries = Deliveries(None, config, KEYS, None)  # backoff reads only the config
    try:
        waits = [deliveries.backoff(attempt) for attempt in range(1, 12)]
    finally:
        deliveries.close()
    assert waits == [30, 60, 120, 240, 480, 960, 1920, 3600, 3600, 3600, 3600]
    # As Deliveries._record decides after each failed attempt: given up once it fails at or after
    # the give-up time (a day after the event), else tried again after backoff(attempts).
    at, attempts = 0, 0
    while True:
        attempts += 1
        if at >= config.webhook_give_up_seconds:
            break
        at += deliveries.backoff(attempts)
    assert (attempts, at) == (31, 3810 + 23 * 3600), "31 attempts over a day, the last one hourly"
