"""Helpers shared by the auth tests: pictures and avatar uploads."""
from __future__ import annotations

import io

from PIL import Image


def picture(fmt: str, size=(640, 400), mode="RGB", color=(30, 120, 200), **save) -> bytes:
    image = Image.new(mode, size, (*color, 128) if mode == "RGBA" else color)
    out = io.BytesIO()
    image.save(out, fmt, **save)
    return out.getvalue()


def multipart(field: str, data: bytes, filename: str = "a.png", boundary: str = "b0undary") -> bytes:
    """A multipart body built in memory (the test client spools big bodies to files it never closes)."""
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n")
    return head.encode() + data + f"\r\n--{boundary}--\r\n".encode()


def upload(account, data: bytes, field: str = "avatar"):
    return account.call("POST", "/api/users/avatar", data=multipart(field, data),
                        content_type="multipart/form-data; boundary=b0undary")
