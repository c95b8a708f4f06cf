"""service accounts, the queue API's request log and dead letters, webhooks

Revision ID: i0001_integrations
Revises:
Create Date: 2026-02-10
"""
from alembic import op
import sqlalchemy as sa
import shared.db

revision = "i0001_integrations"
down_revision = None
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "service_accounts",
        sa.Column("user_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("name", sa.String(length=20), nullable=False),
        sa.Column("owner_user_id", sa.BigInteger(), nullable=False),
        sa.Column("description", sa.String(length=255), nullable=False),
        sa.Column("allowed_workflows", sa.JSON(), nullable=True),
        sa.Column("max_active_jobs", sa.Integer(), nullable=False),
        sa.Column("url_ttl_seconds", sa.Integer(), nullable=False),
        sa.Column("key_id", sa.String(length=40), nullable=False),
        sa.Column("key_created_at", shared.db.UTCDateTime, nullable=False),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("created_by", sa.BigInteger(), nullable=False),
        sa.Column("created_at", shared.db.UTCDateTime, nullable=False),
        sa.Column("updated_at", shared.db.UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_service_accounts")),
        sa.UniqueConstraint("name", name=op.f("uq_service_accounts_name")),
        sa.UniqueConstraint("key_id", name=op.f("uq_service_accounts_key_id")),
    )
    op.create_table(
        "queue_requests",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("account_user_id", sa.BigInteger(), nullable=False),
        sa.Column("request_id", sa.String(length=100), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("job_id", sa.String(length=64), nullable=True),
        sa.Column("reply_to", sa.String(length=255), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=True),
        sa.Column("want_progress", sa.Boolean(), nullable=False),
        sa.Column("cost", sa.Integer(), nullable=True),
        sa.Column("charged", sa.Integer(), nullable=True),
        sa.Column("error_code", sa.String(length=64), nullable=True),
        sa.Column("duplicates", sa.Integer(), nullable=False),
        sa.Column("received_at", shared.db.UTCDateTime, nullable=False),
        sa.Column("admitted_at", shared.db.UTCDateTime, nullable=True),
        sa.Column("finished_at", shared.db.UTCDateTime, nullable=True),
        sa.Column("answered_at", shared.db.UTCDateTime, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_queue_requests")),
        sa.UniqueConstraint("account_user_id", "request_id", name=op.f("uq_queue_requests_account_user_id_request_id")),
    )
    op.create_index(op.f("ix_queue_requests_job_id"), "queue_requests", ["job_id"])
    op.create_index("ix_queue_requests_account_user_id_status", "queue_requests", ["account_user_id", "status"])
    op.create_table(
        "queue_dead_letters",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("queue", sa.String(length=255), nullable=False),
        sa.Column("account_user_id", sa.BigInteger(), nullable=True),
        sa.Column("key_id", sa.String(length=64), nullable=True),
        sa.Column("detail", sa.String(length=500), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("created_at", shared.db.UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_queue_dead_letters")),
    )
    op.create_index(op.f("ix_queue_dead_letters_account_user_id"), "queue_dead_letters", ["account_user_id"])
    op.create_index("ix_queue_dead_letters_reason_created_at", "queue_dead_letters", ["reason", "created_at"])
    op.create_table(
        "webhook_endpoints",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("url", sa.String(length=2000), nullable=False),
        sa.Column("events", sa.JSON(), nullable=False),
        sa.Column("description", sa.String(length=255), nullable=False),
        sa.Column("key_id", sa.String(length=40), nullable=False),
        sa.Column("created_by", sa.BigInteger(), nullable=False),
        sa.Column("created_at", shared.db.UTCDateTime, nullable=False),
        sa.Column("deleted_at", shared.db.UTCDateTime, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_endpoints")),
        sa.UniqueConstraint("key_id", name=op.f("uq_webhook_endpoints_key_id")),
    )
    op.create_index(op.f("ix_webhook_endpoints_user_id"), "webhook_endpoints", ["user_id"])
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("endpoint_id", sa.BigInteger(), nullable=False),
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("event_type", sa.String(length=32), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.Column("next_attempt_at", shared.db.UTCDateTime, nullable=True),
        sa.Column("locked_until", shared.db.UTCDateTime, nullable=True),
        sa.Column("give_up_at", shared.db.UTCDateTime, nullable=False),
        sa.Column("created_at", shared.db.UTCDateTime, nullable=False),
        sa.Column("last_attempt_at", shared.db.UTCDateTime, nullable=True),
        sa.Column("delivered_at", shared.db.UTCDateTime, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_deliveries")),
        sa.UniqueConstraint("endpoint_id", "event_id", name=op.f("uq_webhook_deliveries_endpoint_id_event_id")),
    )
    op.create_index("ix_webhook_deliveries_status_next_attempt_at", "webhook_deliveries",
                    ["status", "next_attempt_at"])
    op.create_index("ix_webhook_deliveries_endpoint_id_created_at", "webhook_deliveries",
                    ["endpoint_id", "created_at"])


def downgrade() -> None:
    op.drop_table("webhook_deliveries")
    op.drop_table("webhook_endpoints")
    op.drop_table("queue_dead_letters")
    op.drop_table("queue_requests")
    op.drop_table("service_accounts")
