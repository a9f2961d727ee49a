"""Initial schema: models, API keys, call metrics, failure cache; seed a few hosted models.

Revision ID: 0001
Revises:
Create Date: 2025-11-25
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SEED_MODELS = (
    ("openai:gpt-4.1-mini", "openai", "GPT-4.1 mini", 100),
    ("anthropic:claude-haiku-4-5", "anthropic", "Claude Haiku 4.5", 110),
    ("google:gemini-2.5-flash", "google", "Gemini 2.5 Flash", 120),
    ("mistral:mistral-small-latest", "mistral", "Mistral Small", 130),
)


def upgrade() -> None:
    ai_models = op.create_table(
        "ai_models",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.String(255), nullable=False),
        sa.Column("provider", sa.String(64), nullable=False),
        sa.Column("display_name", sa.String(255), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_ai_models"),
        sa.UniqueConstraint("model_id", name="uq_ai_models_model_id"),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("provider", sa.String(64), nullable=False),
        sa.Column("label", sa.String(100), nullable=False),
        sa.Column("encrypted_key", sa.Text(), nullable=False),
        sa.Column("user_id", sa.String(64), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("last_tested_at", sa.DateTime(), nullable=True),
        sa.Column("last_test_status", sa.String(32), nullable=True),
        sa.Column("last_test_detail", sa.Text(), nullable=True),
        sa.Column("last_test_latency_ms", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
        sa.UniqueConstraint("provider", "label", "user_id", name="uq_api_keys_provider_label_user_id"),
    )
    op.create_table(
        "call_metrics",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ts", sa.Float(), nullable=False),
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("requested_model", sa.String(255), nullable=False),
        sa.Column("model", sa.String(255), nullable=False),
        sa.Column("provider", sa.String(64), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("error_kind", sa.String(64), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("ttft_ms", sa.Float(), nullable=True),
        sa.Column("prompt_tokens", sa.Integer(), nullable=True),
        sa.Column("completion_tokens", sa.Integer(), nullable=True),
        sa.Column("fallback_from", sa.String(255), nullable=True),
        sa.Column("streamed", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_call_metrics"),
    )
    op.create_index("ix_call_metrics_ts", "call_metrics", ["ts"])
    op.create_index("ix_call_metrics_request_id_ts", "call_metrics", ["request_id", "ts"])
    op.create_index("ix_call_metrics_model_ts", "call_metrics", ["model", "ts"])
    op.create_index("ix_call_metrics_fallback_from_ts", "call_metrics", ["fallback_from", "ts"])
    op.create_index(
        "ix_call_metrics_outcome_model_latency_ms_ts", "call_metrics", ["outcome", "model", "latency_ms", "ts"]
    )
    op.create_table(
        "model_failures",
        sa.Column("model_id", sa.String(255), nullable=False),
        sa.Column("error_kind", sa.String(64), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("since", sa.DateTime(), nullable=False),
        sa.Column("until", sa.DateTime(), nullable=False),
        sa.Column("failure_count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("model_id", name="pk_model_failures"),
    )
    # Naive UTC, the form store.tables.UTCDateTime writes.
    now = datetime.now(UTC).replace(tzinfo=None)
    op.bulk_insert(
        ai_models,
        [
            {"model_id": model_id, "provider": provider, "display_name": name, "active": True,
             "priority": priority, "source": "seed", "created_at": now, "updated_at": now}
            for model_id, provider, name, priority in SEED_MODELS
        ],
    )


def downgrade() -> None:
    op.drop_table("model_failures")
    op.drop_index("ix_call_metrics_outcome_model_latency_ms_ts", table_name="call_metrics")
    op.drop_index("ix_call_metrics_fallback_from_ts", table_name="call_metrics")
    op.drop_index("ix_call_metrics_model_ts", table_name="call_metrics")
    op.drop_index("ix_call_metrics_request_id_ts", table_name="call_metrics")
    op.drop_index("ix_call_metrics_ts", table_name="call_metrics")
    op.drop_table("call_metrics")
    op.drop_table("api_keys")
    op.drop_table("ai_models")
