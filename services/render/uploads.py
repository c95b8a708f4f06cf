"""Source images for image-to-image and upscale: uploads, and the user's own outputs or works.

An upload must be a PNG, JPEG or WebP of at most ``RENDER_UPLOAD_MAX_BYTES`` that really
decodes; it is stored under a content key and recorded as the user's (``render_uploads``).
A job names its source as ``upload:<id>``, ``output:<id>`` or ``work:<id>``; each is
resolved here to a stored file the caller owns — anyone else's is reported as not found.
"""
from __future__ import annotations

import hashlib
import io
import uuid
import warnings
from dataclasses import dataclass

from PIL import Image
from sqlalchemy.orm import Session

from services.gallery.client import GalleryClient
from services.render.models import RenderOutput, RenderUpload
from shared.errors import ServiceError, ServiceUnavailable, Unprocessable
from shared.storage import Storage, StorageError, digest_key

FORMATS = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp"}
MAX_UPLOAD_PIXELS = 40_000_000


@dataclass(frozen=True)
class Source:
    ref: str
    image_key: str
    width: int
    height: int


class PayloadTooLarge(ServiceError):
    status, code, message = 413, "PAYLOAD_TOO_LARGE", "The file is too large."


def inspect_image(data: bytes) -> tuple[str, int, int]:
    """(format, width, height) of a PNG/JPEG/WebP that fully decodes; 422 otherwise."""
    bad = Unprocessable("The file is not a PNG, JPEG or WebP image.", code="INVALID_IMAGE",
                        details={"image": ["Must be a PNG, JPEG or WebP image."]})
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as probe:
                image_format, (width, height) = probe.format, probe.size
                if image_format not in FORMATS:
                    raise bad
                if width * height > MAX_UPLOAD_PIXELS:
                    raise Unprocessable("The image has too many pixels.", code="IMAGE_TOO_LARGE",
                                        details={"image": [f"At most {MAX_UPLOAD_PIXELS} pixels."]})
                probe.verify()
            with Image.open(io.BytesIO(data)) as image:
                image.load()
    except ServiceError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise bad from exc
    return image_format, width, height


def store_upload(session: Session, storage: Storage, user_id: int, data: bytes,
                 image: tuple[str, int, int]) -> RenderUpload:
    """Store an upload that ``inspect_image`` found to be ``image`` (format, width, height)."""
    image_format, width, height = image
    digest = hashlib.sha256(data).hexdigest()  # the key's and the row's
    key = storage.put(digest_key(digest, FORMATS[image_format], "uploads"), data)
    upload = RenderUpload(id=uuid.uuid4().hex, user_id=user_id, image_key=key, format=FORMATS[image_format],
                          width=width, height=height, file_size=len(data), sha256=digest)
    session.add(upload)
    session.flush()
    return upload


def _not_found(field: str) -> Unprocessable:
    return Unprocessable("The source image was not found.", code="SOURCE_NOT_FOUND",
                         details={field: ["No such upload, output or work of yours."]})


def resolve_source(session: Session, gallery: GalleryClient, storage: Storage, user_id: int, ref: str,
                   bearer: str | None, field: str = "sourceImage") -> Source:
    """The stored file behind ``upload:<id>``, ``output:<id>`` or ``work:<id>``, owned by the caller."""
    kind, _, ident = ref.partition(":")
    if not ident or len(ident) > 64:
        raise _not_found(field)
    if kind == "upload":
        upload = session.get(RenderUpload, ident)
        if upload is None or upload.user_id != user_id:
            raise _not_found(field)
        return Source(ref, upload.image_key, upload.width, upload.height)
    if kind == "output":
        output = session.get(RenderOutput, ident)
        if output is None or output.user_id != user_id:
            raise _not_found(field)
        return Source(ref, output.image_key, output.width, output.height)
    if kind == "work" and ident.isascii() and ident.isdigit():  # isdigit() alone takes "²"
        return _work_source(gallery, storage, ref, ident, bearer, field)
    raise _not_found(field)


def _work_source(gallery: GalleryClient, storage: Storage, ref: str, work_id: str, bearer: str | None,
                 field: str) -> Source:
    """Ask the gallery (as the caller) for the work; only its owner may use it as a source."""
    try:
        work = gallery.work(int(work_id), bearer)
    except ServiceError as exc:
        if exc.status in (403, 404):
            raise _not_found(field) from exc
        raise
    except (KeyError, TypeError) as exc:
        raise ServiceUnavailable("The gallery answered unexpectedly.", code="GALLERY_UNAVAILABLE") from exc
    prefix = storage.url_prefix + "/"
    image_url = str(work.get("imageUrl") or "").split("?", 1)[0]  # private works' URLs are signed
    if not work.get("isOwner") or not image_url.startswith(prefix):
        raise _not_found(field)
    key = image_url[len(prefix):]
    try:
        with Image.open(io.BytesIO(storage.read(key))) as image:
            width, height = image.size
    except (OSError, ValueError, StorageError) as exc:
        raise _not_found(field) from exc
    return Source(ref, key, width, height)
