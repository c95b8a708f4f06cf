"""What integrators receive about a finished job, over the queue or a webhook: the outcome
announced on ``platform:events``, with the images as absolute URLs signed for the account's
chosen time (``url_ttl_seconds``; the signature is valid between that and twice that)."""
from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

from shared.events import Announcement
from shared.storage import Storage
from services.render.client import RenderClient

STATUS_OF = {"job.succeeded": "succeeded", "job.failed": "failed", "job.cancelled": "cancelled"}


class JobOutcomes:
    def __init__(self, render: RenderClient, storage: Storage, public_url: str) -> None:
        self.render = render
        self.storage = storage
        self.public_url = public_url

    def images(self, job_id: str, ttl: int) -> list[dict[str, Any]]:
        now = time.time()
        images = []
        for output in self.render.job_outputs(job_id):
            expires, _ = self.storage.signer.sign(output.image_key, now, ttl)
            images.append({"index": output.index, "url": self._url(output.image_key, now, ttl),
                           "thumbnailUrl": self._url(output.thumbnail_key, now, ttl), "width": output.width,
                           "height": output.height, "sha256": output.sha256,
                           "expiresAt": datetime.fromtimestamp(expires, timezone.utc).isoformat().replace("+00:00", "Z")})
        return images

    def data(self, outcome: Announcement, ttl: int) -> dict[str, Any]:
        """The data of a ``job.*`` reply or webhook event."""
        source = outcome.data
        data: dict[str, Any] = {"jobId": outcome.job_id, "charged": int(source.get("charged") or 0)}
        if outcome.type == "job.succeeded":
            data["images"] = self.images(outcome.job_id, ttl)
        else:
            data["refunded"] = int(source.get("refunded") or 0)
        if outcome.type == "job.failed":
            data["error"] = {"code": source.get("errorCode"), "message": source.get("message"),
                             "class": source.get("errorClass")}
        return data

    def _url(self, key: str, now: float, ttl: int) -> str:
        return self.public_url + self.storage.signed_url(key, now, ttl)
