"""The schema as ORM classes. Changes to it go through a new migration in orchestrator_core/migrations."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Upper bounds (ms, inclusive) of the log-spaced histogram buckets of the metric rollups; one more
# bucket holds everything above the last bound. Changing them changes the columns: a new migration.
HISTOGRAM_BOUNDS_MS: tuple[float, ...] = (
    5, 10, 20, 35, 50, 75, 100, 150, 200, 300, 400, 500, 750, 1000, 1500, 2000, 3000, 4000, 5000, 7500,
    10000, 15000, 20000, 30000, 60000, 120000,
)
LATENCY_BUCKETS = tuple(f"lat_b{i:02d}" for i in range(len(HISTOGRAM_BOUNDS_MS) + 1))
TTFT_BUCKETS = tuple(f"ttft_b{i:02d}" for i in range(len(HISTOGRAM_BOUNDS_MS) + 1))
# What, besides its minute or hour, identifies one rollup row. error_kind and fallback_from hold ''
# for "none": NULLs never collide in a unique constraint, so an upsert would insert a new row every time.
ROLLUP_DIMENSIONS = ("model", "provider", "outcome", "error_kind", "fallback_from", "streamed")
# Cost sums (issue 11, migration 0008): cost of the priced rows, how many rows were priced, and for fallback rows
# priced on both sides, what the requested model would have charged and what the answering one did.
COST_SUMS = ("cost_usd_sum", "priced_calls", "requested_cost_usd_sum", "compared_cost_usd_sum")
ROLLUP_SUMS = ("calls", "latency_ms_sum", "ttft_count", "ttft_ms_sum", "prompt_tokens_sum", "completion_tokens_sum",
               "first_attempts", *LATENCY_BUCKETS, *TTFT_BUCKETS, *COST_SUMS)

# Named constraints so later migrations can alter them on every backend (SQLite batch mode needs names).
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Stored as naive UTC on every backend; always read back as an aware UTC datetime."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:  # a naive value is taken to be UTC already
            return value
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        stored: datetime = value  # every backend hands back a naive datetime for this column
        return stored.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class AIModel(Base):
    __tablename__ = "ai_models"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[str] = mapped_column(String(255), unique=True)  # "provider:model"
    provider: Mapped[str] = mapped_column(String(64))
    display_name: Mapped[str | None] = mapped_column(String(255))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    priority: Mapped[int] = mapped_column(Integer, default=100)  # lower = preferred
    source: Mapped[str] = mapped_column(String(16), default="user")  # seed | user | discovered
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ApiKey(Base):
    __tablename__ = "api_keys"
    __table_args__ = (UniqueConstraint("provider", "label", "user_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    provider: Mapped[str] = mapped_column(String(64))
    label: Mapped[str] = mapped_column(String(100))
    encrypted_key: Mapped[str] = mapped_column(Text)  # a Fernet token; the plaintext is never stored
    user_id: Mapped[str | None] = mapped_column(String(64), default="local")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_tested_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_test_status: Mapped[str | None] = mapped_column(String(32))  # ok | rejected | could_not_verify
    last_test_detail: Mapped[str | None] = mapped_column(Text)
    last_test_latency_ms: Mapped[float | None] = mapped_column(Float)
    # Key pools (issue 10, migration 0007); ``provider`` holds the key's connection name.
    position: Mapped[int] = mapped_column(Integer, default=0)  # order within the connection's pool
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)  # already scrubbed of secrets
    fault: Mapped[str | None] = mapped_column(String(16))  # cooling | rejected | exhausted (errors.KeyFault)
    cooling_until: Mapped[datetime | None] = mapped_column(UTCDateTime)


class CallMetric(Base):
    """One attempt of one model within a call; ts is epoch seconds so time bucketing stays portable."""

    __tablename__ = "call_metrics"
    __table_args__ = (
        Index("ix_call_metrics_ts", "ts"),
        Index("ix_call_metrics_request_id_ts", "request_id", "ts"),  # COUNT(DISTINCT request_id) without a sort
        Index("ix_call_metrics_model_ts", "model", "ts"),
        Index("ix_call_metrics_fallback_from_ts", "fallback_from", "ts"),
        # Covering index for model_stats: counts per (outcome, model) and percentile index walks.
        Index("ix_call_metrics_outcome_model_latency_ms_ts", "outcome", "model", "latency_ms", "ts"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ts: Mapped[float] = mapped_column(Float)
    request_id: Mapped[str] = mapped_column(String(64))
    requested_model: Mapped[str] = mapped_column(String(255))
    model: Mapped[str] = mapped_column(String(255))
    provider: Mapped[str] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(16))  # ok | error | skipped
    error_kind: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(Text)  # already scrubbed of secrets by errors.classify_*
    latency_ms: Mapped[float] = mapped_column(Float)
    ttft_ms: Mapped[float | None] = mapped_column(Float)
    prompt_tokens: Mapped[int | None] = mapped_column(Integer)
    completion_tokens: Mapped[int | None] = mapped_column(Integer)
    fallback_from: Mapped[str | None] = mapped_column(String(255))
    streamed: Mapped[bool] = mapped_column(Boolean, default=False)
    # Cost (issue 11, migration 0008): USD at write time; NULL is "unknown" (unpriced model or no usage), never 0.
    input_cost_usd: Mapped[float | None] = mapped_column(Float)
    output_cost_usd: Mapped[float | None] = mapped_column(Float)
    cost_usd: Mapped[float | None] = mapped_column(Float)
    price_source: Mapped[str | None] = mapped_column(String(64))  # "genai-prices 0.2.3" | "override" | "local"
    requested_cost_usd: Mapped[float | None] = mapped_column(Float)  # a fallback row: the requested model's price


class ModelFailure(Base):
    """The failure cache: one row per model, shared by every process on the database."""

    __tablename__ = "model_failures"

    model_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    error_kind: Mapped[str] = mapped_column(String(64))
    message: Mapped[str] = mapped_column(Text)
    since: Mapped[datetime] = mapped_column(UTCDateTime)
    until: Mapped[datetime] = mapped_column(UTCDateTime)
    failure_count: Mapped[int] = mapped_column(Integer, default=1)


def _rollup_table(name: str, period: str) -> Table:
    """call_metrics summed per period (epoch seconds of its start) and dimensions; see store/rollup.py."""

    def count(column: str) -> Column[int]:
        return Column(column, Integer, nullable=False, default=0)

    return Table(
        name,
        Base.metadata,
        Column("id", Integer, primary_key=True),
        Column(period, BigInteger, nullable=False),
        Column("model", String(255), nullable=False),
        Column("provider", String(64), nullable=False),
        Column("outcome", String(16), nullable=False),
        Column("error_kind", String(64), nullable=False),
        Column("fallback_from", String(255), nullable=False),
        Column("streamed", Boolean, nullable=False),
        count("calls"),
        Column("latency_ms_sum", Float, nullable=False, default=0.0),
        count("ttft_count"),
        Column("ttft_ms_sum", Float, nullable=False, default=0.0),
        Column("prompt_tokens_sum", BigInteger, nullable=False, default=0),
        Column("completion_tokens_sum", BigInteger, nullable=False, default=0),
        count("first_attempts"),  # rows without fallback_from: one per request
        *(count(column) for column in LATENCY_BUCKETS + TTFT_BUCKETS),  # values per HISTOGRAM_BOUNDS_MS bucket
        *(Column(c, Integer if c == "priced_calls" else Float, nullable=False, default=0) for c in COST_SUMS),
        UniqueConstraint(period, *ROLLUP_DIMENSIONS, name=f"uq_{name}_key"),
        Index(f"ix_{name}_{period}", period),
    )


call_metrics_minute = _rollup_table("call_metrics_minute", "minute")
# The same per hour: a week of charts reads a few ten thousand rows instead of a few hundred thousand.
call_metrics_hour = _rollup_table("call_metrics_hour", "hour")


class CallMetricMinute(Base):
    """call_metrics per minute, kept by the metrics writer in the same transaction as the rows."""

    __table__ = call_metrics_minute


class CallMetricHour(Base):
    """call_metrics per hour, kept the same way."""

    __table__ = call_metrics_hour


# -- exits (issue 7 §6): facts about the whole installation, shared by every process on the database ------
class AppMeta(Base):
    """Key-value facts of the installation, e.g. a verifier of the secret that encrypts stored keys."""

    __tablename__ = "app_meta"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


# -- in-memory caches (store/generations.py) ----------------------------------------------------------


class CacheGeneration(Base):
    """A change counter per cached area (failures, keys, registry), bumped with every write to it."""

    __tablename__ = "cache_generations"

    area: Mapped[str] = mapped_column(String(32), primary_key=True)
    generation: Mapped[int] = mapped_column(BigInteger, default=0)


# -- Gateway tokens (the HTTP API, issue 12) -----------------------------------------------------------


class GatewayToken(Base):
    """A bearer token for the HTTP API. Only its SHA-256 is stored; token_id (public) finds the row."""

    __tablename__ = "gateway_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_id: Mapped[str] = mapped_column(String(32), unique=True)  # the public part inside the token
    name: Mapped[str] = mapped_column(String(100))
    scope: Mapped[str] = mapped_column(String(16))  # chat | admin
    token_hash: Mapped[str] = mapped_column(String(64))  # hex SHA-256 of the whole token
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


# -- the console's access gate --------------------------------------------------------------------
class SignInLimit(Base):
    """Failed sign-ins in a row and the lockout, per scope (the console's password is one scope)."""

    __tablename__ = "sign_in_limits"

    scope: Mapped[str] = mapped_column(String(64), primary_key=True)
    # Attempts reserved since the last success or expired lockout, the one being checked included.
    failures: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[float] = mapped_column(Float, default=0.0)  # epoch seconds; 0: not locked


# -- connections, key pools and model groups (issue 10) ----------------------------------------------
class ConnectionRow(Base):
    """A named endpoint of one kind; its name is the prefix of its model ids (``desk:qwen2.5-7b``).

    The seeded connection of a kind (named after it) needs no row: one is written when it is edited.
    """

    __tablename__ = "connections"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(32), unique=True)
    kind: Mapped[str] = mapped_column(String(32))
    base_url: Mapped[str | None] = mapped_column(String(1000))  # None: a seeded one follows its env var / default
    options: Mapped[str] = mapped_column(Text, default="{}")  # JSON object of strings
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    key_mode: Mapped[str] = mapped_column(String(16), default="ordered")  # ordered | round-robin
    seeded: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ModelGroupRow(Base):
    """A name usable wherever a model id is: its members are tried in order."""

    __tablename__ = "model_groups"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    members: Mapped[str] = mapped_column(Text)  # JSON array of model ids
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


# -- cost (issue 11): price overrides and budgets ----------------------------------------------------------


class PriceOverride(Base):
    """The operator's price for a model id, or for every model of a connection ("openai:*"); wins over the table."""

    __tablename__ = "price_overrides"

    target: Mapped[str] = mapped_column(String(255), primary_key=True)  # "provider:model" or "provider:*"
    input_per_mtok: Mapped[float] = mapped_column(Float)  # USD per million input tokens
    output_per_mtok: Mapped[float] = mapped_column(Float)
    cached_input_per_mtok: Mapped[float | None] = mapped_column(Float)  # None: cached input costs the input price
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Budget(Base):
    """A spending limit per calendar month or UTC day, for one connection (model id prefix) or "*" for all."""

    __tablename__ = "budgets"
    __table_args__ = (UniqueConstraint("scope", "period"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    scope: Mapped[str] = mapped_column(String(64))  # a connection (the prefix of model ids) or "*"
    period: Mapped[str] = mapped_column(String(8))  # month | day
    limit_usd: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
