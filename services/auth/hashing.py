"""Password hashing with bcrypt.

bcrypt reads only the first 72 bytes of its input, so the password is first hashed with
SHA-256 and base64-encoded (44 ASCII bytes, no NUL): two passwords that differ anywhere,
even after byte 72, get different hashes.
"""
from __future__ import annotations

import base64
import hashlib

import bcrypt


def _prehash(password: str) -> bytes:
    return base64.b64encode(hashlib.sha256(password.encode("utf-8")).digest())


def hash_password(password: str, rounds: int = 12) -> str:
    return bcrypt.hashpw(_prehash(password), bcrypt.gensalt(rounds)).decode("ascii")


def verify_password(password: str, password_hash: str) -> bool:
    return bcrypt.checkpw(_prehash(password), password_hash.encode("ascii"))
