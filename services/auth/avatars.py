"""Turning an uploaded picture into the stored avatar: a 256x256 WebP centre crop.

The upload is trusted only after Pillow has decoded it completely: the format must be
PNG, JPEG or WebP, the pixel count is bounded before decoding (decompression bombs),
and a truncated file fails to decode. Re-encoding from pixels drops EXIF and every
other metadata block.
"""
from __future__ import annotations

import io
import struct

from PIL import Image, ImageOps

from shared.errors import ServiceError, Unprocessable

MAX_AVATAR_BYTES = 2 * 1024 * 1024
# Far above any real photo's need for a 256 px avatar, far below what exhausts memory
# (Pillow's own process-wide limit, MAX_IMAGE_PIXELS, is left as it is).
MAX_AVATAR_PIXELS = 40_000_000
AVATAR_SIZE = 256
ACCEPTED_FORMATS = ("PNG", "JPEG", "WEBP")

# What Pillow raises for files that are not, or not entirely, a decodable image.
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error, IndexError, KeyError)


class AvatarTooLarge(ServiceError):
    status, code = 413, "AVATAR_TOO_LARGE"
    message = "The picture is larger than 2 MB."


def _invalid(reason: str) -> Unprocessable:
    return Unprocessable(f"The picture cannot be used: {reason}", code="INVALID_IMAGE",
                         details={"avatar": [reason]})


def render_avatar(data: bytes) -> bytes:
    """Validate ``data`` as a picture and return the avatar as WebP bytes."""
    if len(data) > MAX_AVATAR_BYTES:
        raise AvatarTooLarge()
    if not data:
        raise _invalid("the file is empty.")
    try:
        with Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS) as image:
            width, height = image.size
            if width * height > MAX_AVATAR_PIXELS:
                raise _invalid("the picture has too many pixels.")
            image.load()
            upright = ImageOps.exif_transpose(image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _invalid("the picture has too many pixels.") from exc
    except Image.UnidentifiedImageError as exc:
        raise _invalid("use a PNG, JPEG or WebP picture.") from exc
    except _DECODE_ERRORS as exc:
        raise _invalid("the file is damaged or incomplete.") from exc
    mode = "RGBA" if upright.mode in ("RGBA", "LA", "PA") or "transparency" in upright.info else "RGB"
    square = ImageOps.fit(upright.convert(mode), (AVATAR_SIZE, AVATAR_SIZE), Image.Resampling.LANCZOS)
    square.info.clear()
    out = io.BytesIO()
    square.save(out, format="WEBP", quality=85, method=4, exif=b"", icc_profile=None, xmp=b"")
    return out.getvalue()
