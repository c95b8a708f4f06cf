"""Comparing a presented secret with the expected one in constant time.

``hmac.compare_digest`` takes two ``str`` only when both are ASCII and raises ``TypeError``
otherwise, and a header can carry any character (a WSGI server decodes it as Latin-1): an
``X-Service-Token: é`` must be a wrong token (403), not a 500. Both sides are compared as UTF-8.
"""
from __future__ import annotations

import hmac


def same_secret(presented: str, expected: str) -> bool:
    return hmac.compare_digest(presented.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass"))
