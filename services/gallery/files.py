"""The works' own copies of their files, and who may fetch them.

Files are copied from the render output to the work's own ``works/`` keys *before* the
row is written, so a storage failure leaves no row pointing at a missing file; a work's
files are removed after commit once no other work references them (outputs have their
own copies, which the render side expires). Listed works are served by plain URLs
(cacheable by anyone), everything else by expiring signed URLs.
"""
from __future__ import annotations

import logging
from typing import Iterable

from sqlalchemy import select, true
from sqlalchemy.orm import Session

from shared.db import Database, after_commit
from shared.errors import Conflict, ServiceUnavailable
from shared.storage import Storage, StorageError, is_valid_key, remove_unreferenced
from services.gallery.models import Work
from services.render.client import OutputRecord

log = logging.getLogger(__name__)
WORK_KEY_PREFIX = "works/"


def _work_key(output_key: str) -> str:
    if not is_valid_key(output_key) or output_key.startswith(WORK_KEY_PREFIX):
        raise ServiceUnavailable("The render service answered with a malformed file key.",
                                 code="UPSTREAM_MALFORMED")
    return WORK_KEY_PREFIX + output_key


def referenced_keys(session: Session, keys: list[str]) -> set[str]:
    """Those of ``keys`` that some work still uses as its image or thumbnail."""
    if not keys:
        return set()
    images = session.scalars(select(Work.image_key).where(Work.image_key.in_(keys)))
    thumbs = session.scalars(select(Work.thumbnail_key).where(Work.thumbnail_key.in_(keys)))
    return set(images) | set(thumbs)


class WorkFiles:
    def __init__(self, db: Database, storage: Storage) -> None:
        self.db = db
        self.storage = storage

    def copy_from(self, output: OutputRecord) -> tuple[str, str]:
        """Give the work its own copies of the output's image and thumbnail."""
        pairs = [(output.image_key, _work_key(output.image_key)),
                 (output.thumbnail_key, _work_key(output.thumbnail_key))]
        try:
            for source, dest in pairs:
                self.storage.copy(source, dest)
        except FileNotFoundError as exc:
            raise Conflict("This output's files are gone; it can no longer be saved.",
                           code="OUTPUT_FILE_MISSING") from exc
        except (StorageError, OSError) as exc:
            log.error("storage failed while saving output %s: %s", output.id, exc)
            raise ServiceUnavailable("File storage is unavailable; nothing was saved. Try again shortly.",
                                     code="STORAGE_UNAVAILABLE") from exc
        return pairs[0][1], pairs[1][1]

    def ensure_copied(self, outputs: list[OutputRecord]) -> None:
        """After commit: restore a copy that a concurrent delete of an identical work removed."""
        for output in outputs:
            for source in (output.image_key, output.thumbnail_key):
                dest = _work_key(source)
                try:
                    if not self.storage.exists(dest):
                        self.storage.copy(source, dest)
                except (StorageError, OSError) as exc:
                    log.error("could not restore %s after saving output %s: %s", dest, output.id, exc)

    def remove_after_commit(self, session: Session, keys: Iterable[str]) -> None:
        """Once the transaction commits, delete the gallery's own files no work references any more."""
        own = [key for key in set(keys) if key.startswith(WORK_KEY_PREFIX)]

        def still_used(candidates: list[str]) -> set[str]:
            with self.db.read() as reader:
                return referenced_keys(reader, candidates)

        def remove() -> None:
            try:
                remove_unreferenced(self.storage, own, still_used)
            except (StorageError, OSError) as exc:
                log.error("could not remove files %s: %s", own, exc)

        if own:
            after_commit(session, remove)

    def urls(self, work: Work) -> tuple[str, str]:
        """Plain URLs for listed works (cacheable by anyone), expiring signed URLs otherwise."""
        url = self.storage.url if work.listed else self.storage.signed_url
        return url(work.image_key), url(work.thumbnail_key)

    def read_image(self, work: Work) -> bytes:
        try:
            return self.storage.read(work.image_key)
        except (FileNotFoundError, StorageError, OSError) as exc:
            raise ServiceUnavailable("The image file cannot be read right now.", code="STORAGE_UNAVAILABLE") from exc

    def is_public(self, key: str) -> bool:
        """Whether a listed work shows this file (then anyone may fetch it without a signature)."""
        with self.db.read() as session:
            stmt = select(Work.id).where(Work.listed == true(), (Work.image_key == key) | (Work.thumbnail_key == key))
            return session.scalar(stmt.limit(1)) is not None

    def in_use(self, keys: list[str]) -> list[str]:
        with self.db.read() as session:
            return sorted(referenced_keys(session, keys))
