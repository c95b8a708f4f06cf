"""The gallery's tables: works, their tags and search terms, likes, counted views/downloads,
reports and notifications.

A work copies what it needs from the render output it was saved from (parameters, graph,
size, hash) and keeps its own copy of the files under ``works/`` keys, so the gallery
never joins into another service's tables and never shares a file with an output.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Float, Index, Integer, SmallInteger, String, Text, UniqueConstraint
from sqlalchemy.dialects import mysql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.db import UTCDateTime, new_metadata, utcnow


class Base(DeclarativeBase):
    metadata = new_metadata()


class Work(Base):
    __tablename__ = "works"
    __table_args__ = (
        Index("ix_works_listed_newest", "listed", "created_at", "id"),
        Index("ix_works_listed_likes", "listed", "likes_count", "id"),
        Index("ix_works_listed_views", "listed", "views_count", "id"),
        Index("ix_works_listed_hot", "listed", "hot_score", "id"),
        Index("ix_works_user_newest", "user_id", "created_at"),
        Index("ix_works_image_key", "image_key"),
        Index("ix_works_thumbnail_key", "thumbnail_key"),
        Index("ix_works_review_state", "review_state", "created_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(BigInteger)  # auth's user ids are 64-bit
    author_username: Mapped[str] = mapped_column(String(64))
    output_id: Mapped[str] = mapped_column(String(64), unique=True)
    job_id: Mapped[str] = mapped_column(String(64))
    title: Mapped[str] = mapped_column(String(100))
    description: Mapped[str] = mapped_column(String(1000), default="")
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    is_public: Mapped[bool] = mapped_column(Boolean, default=True)
    # listed = public and not hidden by a moderator: what the gallery and public media show.
    listed: Mapped[bool] = mapped_column(Boolean, default=True)
    is_hidden: Mapped[bool] = mapped_column(Boolean, default=False)
    hidden_reason: Mapped[str | None] = mapped_column(String(500), nullable=True)
    hidden_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    featured_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Publishing review (GALLERY_REVIEW_MODE): none | pending | approved | rejected. A public work
    # that is pending or rejected is not listed.
    review_state: Mapped[str] = mapped_column(String(16), default="none", server_default="none")
    review_reason: Mapped[str | None] = mapped_column(String(500), nullable=True)
    review_categories: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)  # what flagged it
    reviewed_by: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    reviewed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    image_key: Mapped[str] = mapped_column(String(255))
    thumbnail_key: Mapped[str] = mapped_column(String(255))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    file_size: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    workflow: Mapped[str] = mapped_column(String(64))
    workflow_version: Mapped[str | None] = mapped_column(String(32), nullable=True)
    model: Mapped[str] = mapped_column(String(128), default="")
    source_work_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    graph: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    prompt: Mapped[str] = mapped_column(Text, default="")
    search_text: Mapped[str] = mapped_column(Text, nullable=True, default="")
    likes_count: Mapped[int] = mapped_column(Integer, default=0)
    views_count: Mapped[int] = mapped_column(Integer, default=0)
    downloads_count: Mapped[int] = mapped_column(Integer, default=0)
    hot_score: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class WorkTag(Base):
    """One tag of one work, casefolded, for the tag filter (the work keeps the spelling shown)."""

    __tablename__ = "work_tags"
    __table_args__ = (Index("ix_work_tags_tag_work", "tag", "work_id"),)

    work_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tag: Mapped[str] = mapped_column(String(20), primary_key=True)


# Terms compare by code point on every backend (MariaDB's default collation would fold
# case and accents and make prefix ranges inexact).
SearchTerm = String(32).with_variant(mysql.VARCHAR(32, collation="utf8mb4_bin"), "mysql", "mariadb")


class WorkTerm(Base):
    """One search term of one work (``services/gallery/search.py``); weight 2 when the term is
    in the title or a tag, else 1. Clustered by term, so a term's works are one range (and
    its works of one weight one range of ``ix_work_terms_weight_term``, prefixes too)."""

    __tablename__ = "work_terms"
    __table_args__ = (Index("ix_work_terms_work_id", "work_id"), Index("ix_work_terms_weight_term", "weight", "term"),
                      {"sqlite_with_rowid": False})

    term: Mapped[str] = mapped_column(SearchTerm, primary_key=True)
    work_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    weight: Mapped[int] = mapped_column(SmallInteger)


class WorkLike(Base):
    """One user's like of one work; the unique pair makes a double like impossible."""

    __tablename__ = "work_likes"
    __table_args__ = (UniqueConstraint("work_id", "user_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    work_id: Mapped[int] = mapped_column(Integer)
    user_id: Mapped[int] = mapped_column(BigInteger, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class WorkHit(Base):
    """When a viewer's view or download of a work last counted; one row per (work, kind, viewer)."""

    __tablename__ = "work_hits"
    __table_args__ = (UniqueConstraint("work_id", "kind", "viewer"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    work_id: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))
    viewer: Mapped[str] = mapped_column(String(64))
    counted_at: Mapped[datetime] = mapped_column(UTCDateTime)


class WorkReport(Base):
    __tablename__ = "work_reports"
    __table_args__ = (UniqueConstraint("work_id", "reporter_id"), Index("ix_work_reports_status", "status", "id"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    work_id: Mapped[int] = mapped_column(Integer)
    reporter_id: Mapped[int] = mapped_column(BigInteger, index=True)
    reason: Mapped[str] = mapped_column(String(500))
    status: Mapped[str] = mapped_column(String(16), default="open")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    resolved_by: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class Notification(Base):
    """A message for one user. ``dedupe_key`` makes a repeated cause (a re-like, a retried
    grant) produce one notification."""

    __tablename__ = "notifications"
    __table_args__ = (
        UniqueConstraint("user_id", "dedupe_key"),
        Index("ix_notifications_user_read", "user_id", "is_read", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(BigInteger)
    type: Mapped[str] = mapped_column(String(32))
    title: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(String(1000), default="")
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    dedupe_key: Mapped[str | None] = mapped_column(String(128), nullable=True)
    is_read: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    read_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
