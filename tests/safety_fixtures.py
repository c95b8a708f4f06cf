"""Helpers for tests that run a caller (render, gallery, auth) against the safety service's
term list: a made-up term no other test writes, added as an administrator would, and the
audit rows a decision left."""
from __future__ import annotations

import uuid

from flask import Flask

from shared.tokens import Claims

MODERATOR = Claims(user_id=1, username="moderator", role="admin", token_id="t")


def made_up_term(tag: str = "x") -> str:
    """Two random CJK characters, the tag and a number: a word no other test (nor prose) contains."""
    code = uuid.uuid4().int
    return chr(0x4E00 + code % 20000) + chr(0x4E00 + (code >> 20) % 20000) + f"{tag}{code % 10**6}"


def add_term(safety: Flask, severity: str, category: str, tag: str = "x") -> str:
    """Put a made-up term on ``safety``'s list (published to Redis at once); returns it."""
    text = made_up_term(tag)
    safety.extensions["safety_terms"].create(MODERATOR, {"text": text, "kind": "term", "category": category,
                                                         "severity": severity, "note": ""})
    return text


def audit_rows(safety: Flask, **query) -> list[dict]:
    return safety.extensions["safety_audit"].search({"page": 1, "page_size": 50, **query})["items"]
