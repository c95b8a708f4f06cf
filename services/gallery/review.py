"""Publishing review (``GALLERY_REVIEW_MODE``) and the term list's checks of gallery text.

- ``off``: works are listed as soon as they are public; review matches are only recorded.
- ``flagged-only`` (the default): a public work whose title, description, tags, prompt or
  negative prompt matches the term list waits for a moderator (``pending``).
- ``all``: every work waits for a moderator before it is first listed, and again after its
  author changes its text.

A title, description or tag matching a ``block`` entry is refused (422 CONTENT_REJECTED).
The prompt was checked at admission; here it is matched again under today's list, and any
match (either severity) only flags the work. A pending or rejected work is not listed: the
public, the edge cache and the media without signature never see it; its author sees
``reviewState`` (the web client shows "审核中"), moderators see it in the review queue.
"""
from __future__ import annotations

from typing import Any, Iterable

from shared.tokens import Claims
from services.gallery.models import Work
from services.safety.client import ContentFilter

REVIEW_MODES = ("off", "flagged-only", "all")
UNLISTED_STATES = ("pending", "rejected")
TEXT_FIELDS = ("title", "description", "tags")


class ReviewPolicy:
    def __init__(self, mode: str, content_filter: ContentFilter) -> None:
        self.mode = mode
        self.filter = content_filter

    def check_text(self, user: Claims, fields: dict[str, Any], subject: str) -> list[str]:
        """Match submitted text: raises CONTENT_REJECTED on a block; the flagged categories."""
        texts = {name: " ".join(value) if isinstance(value, list) else value
                 for name, value in fields.items() if name in TEXT_FIELDS and value}
        return self.filter.check(texts, source="gallery", actor_id=user.user_id, actor_name=user.username,
                                 subject=subject).categories

    def prompt_categories(self, work: Work) -> list[str]:
        params = work.params or {}
        return self.filter.flagged_quietly({"prompt": work.prompt, "negativePrompt": params.get("negativePrompt")})

    def settle(self, work: Work, text_flags: Iterable[str], *, text_changed: bool, published: bool) -> None:
        """Set the work's review state after it was saved, published or edited (before ``listed`` is derived)."""
        if self.mode == "off" or not work.is_public:
            return
        if not (published or text_changed or work.review_state in UNLISTED_STATES):
            return
        if work.review_state == "approved" and not text_changed:
            return  # approved once, published again unchanged
        flags = sorted(set(text_flags) | set(self.prompt_categories(work)))
        if self.mode == "all" or flags:
            work.review_state, work.review_reason = "pending", None
            work.review_categories = flags or None
        elif work.review_state in UNLISTED_STATES:
            work.review_state, work.review_reason, work.review_categories = "none", None, None
