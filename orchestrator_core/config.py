"""Settings: the one place configuration is read, from the environment and an optional .env file."""

from __future__ import annotations

import math
import os
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

from .errors import ConfigurationError, redact_url
from .providers import registry as _registry

# Derived from the registry of kinds (providers/registry.py), never listed here: the seeded connections'
# names, which of them are local hosts, and their default base URLs.
HOSTED_PROVIDERS = _registry.HOSTED_PROVIDERS
LOCAL_PROVIDERS = _registry.LOCAL_PROVIDERS
DEFAULT_BASE_URLS: dict[str, str] = {
    name: cls.default_base_url for name, cls in _registry.PROVIDERS.items() if cls.default_base_url
}

# The project's folder: the repository root, which holds orchestrator_core/. It, or ORCHESTRATOR_HOME, holds
# .env, data/orchestrator.db and data/secret.key, so a console or CLI started from any folder (a service unit,
# `streamlit run /path/to/streamlit_app.py`) reads the same password and writes the same data.
PROJECT_DIR = Path(__file__).resolve().parent.parent
HOME_ENV = "ORCHESTRATOR_HOME"
# A relative SQLite path is taken from home_dir(), never from the current folder.
DEFAULT_DATABASE_URL = "sqlite:///data/orchestrator.db"
DEFAULT_DATA_DIR = "data"
# The console's password gate: this many wrong passwords in a row, then sign-in is locked for this long.
SIGN_IN_MAX_FAILURES = 5
SIGN_IN_LOCKOUT_S = 60.0
RANKINGS = ("priority", "cost")  # how fallback orders the alternatives of one tier (fallback.rank_alternatives)
SESSION_LIFETIME_S = 12 * 3600.0  # how long the console's session cookie keeps an operator signed in


def home_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where .env, the default database and secret.key live: ORCHESTRATOR_HOME if set, else the project folder."""
    raw = (os.environ if environ is None else environ).get(HOME_ENV, "").strip()
    # An explicit relative ORCHESTRATOR_HOME (e.g. ".") is the operator's choice of the starting folder.
    return Path(raw).expanduser().absolute() if raw else PROJECT_DIR


@dataclass(frozen=True)
class Settings:
    """Every tunable of the core. Build with ``Settings.from_env()``; tests pass values directly."""

    # Left out of repr(): a Settings in a log line, a traceback's locals or a test's assertion output must not
    # carry the keys, the secret or the database password (nor credentials in a base URL).
    database_url: str = field(default=DEFAULT_DATABASE_URL, repr=False)
    base_urls: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_BASE_URLS), repr=False)
    env_keys: Mapping[str, str] = field(default_factory=dict, repr=False)  # provider -> key from <PROVIDER>_API_KEY
    secret_key: str | None = field(default=None, repr=False)  # ORCHESTRATOR_SECRET_KEY; else a key file
    # None: the provider's current default (AnthropicProvider.default_version, GeminiProvider.default_api_version)
    anthropic_version: str | None = None  # ANTHROPIC_VERSION pins another anthropic-version header
    gemini_api_version: str | None = None  # GEMINI_API_VERSION: v1 or v1beta
    connect_timeout_s: float = 2.0
    read_timeout_s: float = 120.0
    status_timeout_s: float = 2.0  # whole budget of one status probe
    load_timeout_s: float = 300.0
    poll_interval_s: float = 1.0
    status_cache_ttl_s: float = 5.0
    failure_cooldown_s: float = 60.0
    max_fallback_hops: int = 3
    default_max_tokens: int = 1024  # Anthropic requires max_tokens; used when the caller gives none
    priorities: Mapping[str, int] = field(default_factory=dict)  # model id -> priority (lower first)
    fallback_enabled: bool = True
    fallback_on_content_filter: bool = True  # a refusal or safety block tries another model (another may answer)
    ranking: str = "priority"  # RANKING: priority, or cost (the cheaper of a tier's alternatives first; issue 11)
    local_hosts: tuple[str, ...] = LOCAL_PROVIDERS  # hosts whose status is probed (LOCAL_HOSTS)
    # The HTTP API (api/): GET /metrics without a token, the SSE comment interval while a stream waits
    # (a cold load), and how many threads run its provider calls (each stream holds one while it runs).
    metrics_public: bool = False
    stream_keepalive_s: float = 5.0
    gateway_threads: int = 64
    sign_in_max_failures: int = SIGN_IN_MAX_FAILURES  # wrong console passwords in a row before the lockout
    sign_in_lockout_s: float = SIGN_IN_LOCKOUT_S  # how long sign-in then stays locked, for every session
    session_lifetime_s: float = SESSION_LIFETIME_S  # a signed-in console survives reloads this long (make run)
    # A hostile or broken host: whole-call and stream idle deadlines, size caps (see providers/guard.py).
    call_deadline_s: float = 600.0  # a whole call, not one read; loads have LOAD_TIMEOUT_S instead
    stream_idle_timeout_s: float = 120.0  # a stream with no new data (keep-alive comments do not count)
    max_response_bytes: int = 8 * 1024 * 1024  # a JSON answer after decompression; one line of a stream
    max_answer_chars: int = 1_000_000  # one streamed answer
    db_connect_timeout_s: float = 10.0  # connecting to a database server (PostgreSQL, MySQL)

    def base_url(self, provider: str) -> str:
        return self.base_urls.get(provider, DEFAULT_BASE_URLS.get(provider, "")).rstrip("/")

    def with_overrides(self, **changes: object) -> Settings:
        """A copy with some fields replaced (tests, the CLI)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        return Settings(**values)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *, dotenv_path: str | Path | None = None) -> Settings:
        """Read settings from ``environ`` (default: os.environ after loading home_dir()/.env, if present)."""
        if environ is None:
            load_env_file(dotenv_path)
            environ = os.environ
        env = {k: v for k, v in environ.items() if v is not None and v.strip() != ""}
        # An empty LOCAL_HOSTS is a choice ("probe none"), not an unset variable, so it is read before the filter.
        local_hosts = environ.get("LOCAL_HOSTS")

        base_urls = dict(DEFAULT_BASE_URLS)
        key_vars: dict[str, str] = {}
        for name, kind in _registry.PROVIDERS.items():  # the first variable set of a kind wins, then its aliases
            if url_var := next((v for v in kind.base_url_env_vars if v in env), None):
                base_urls[name] = _check_url(url_var, env[url_var])
            if key_var := next((v for v in kind.key_env_vars if v in env), None):
                key_vars[name] = key_var
        env_keys = {p: _env_key(var, env[var]) for p, var in key_vars.items()}

        return cls(
            database_url=env.get("DATABASE_URL", DEFAULT_DATABASE_URL),
            base_urls=base_urls,
            env_keys=env_keys,
            secret_key=_secret(environ.get("ORCHESTRATOR_SECRET_KEY")),
            anthropic_version=env.get("ANTHROPIC_VERSION"),
            gemini_api_version=_choice(env, "GEMINI_API_VERSION", ("v1", "v1beta")),
            connect_timeout_s=_number(env, "CONNECT_TIMEOUT_S", 2.0),
            read_timeout_s=_number(env, "READ_TIMEOUT_S", 120.0),
            status_timeout_s=_number(env, "STATUS_TIMEOUT_S", 2.0),
            load_timeout_s=_number(env, "LOAD_TIMEOUT_S", 300.0),
            poll_interval_s=_number(env, "POLL_INTERVAL_S", 1.0),
            status_cache_ttl_s=_number(env, "STATUS_CACHE_TTL_S", 5.0, minimum=0.0),
            failure_cooldown_s=_number(env, "FAILURE_COOLDOWN_S", 60.0, minimum=0.0),
            max_fallback_hops=_whole(env, "MAX_FALLBACK_HOPS", 3, minimum=0),
            default_max_tokens=_whole(env, "DEFAULT_MAX_TOKENS", 1024, minimum=1),
            priorities=_priorities(env.get("MODEL_PRIORITIES", "")),
            fallback_enabled=_flag(env, "FALLBACK_ENABLED"),
            fallback_on_content_filter=_flag(env, "FALLBACK_ON_CONTENT_FILTER"),
            ranking=_choice(env, "RANKING", RANKINGS) or "priority",
            local_hosts=_hosts(local_hosts),
            metrics_public=env.get("METRICS_PUBLIC", "false").strip().lower() in ("1", "true", "yes", "on"),
            stream_keepalive_s=_number(env, "STREAM_KEEPALIVE_S", 5.0),
            gateway_threads=_whole(env, "GATEWAY_THREADS", 64, minimum=1),
            sign_in_max_failures=_whole(env, "SIGN_IN_MAX_FAILURES", SIGN_IN_MAX_FAILURES, minimum=1),
            sign_in_lockout_s=_number(env, "SIGN_IN_LOCKOUT_S", SIGN_IN_LOCKOUT_S, minimum=1.0),
            session_lifetime_s=_number(env, "SESSION_LIFETIME_S", SESSION_LIFETIME_S, minimum=60.0),
            call_deadline_s=_number(env, "CALL_DEADLINE_S", 600.0),
            stream_idle_timeout_s=_number(env, "STREAM_IDLE_TIMEOUT_S", 120.0),
            max_response_bytes=_whole(env, "MAX_RESPONSE_BYTES", 8 * 1024 * 1024, minimum=1024),
            max_answer_chars=_whole(env, "MAX_ANSWER_CHARS", 1_000_000, minimum=1),
            db_connect_timeout_s=_number(env, "DB_CONNECT_TIMEOUT_S", 10.0, minimum=1.0),
        )


def load_env_file(path: str | Path | None = None) -> None:
    """Load a .env file (default: home_dir()/.env) into os.environ; real environment variables win."""
    path = Path(path) if path is not None else home_dir() / ".env"
    if path.is_file():
        from dotenv import load_dotenv  # noqa: PLC0415 - python-dotenv loads only when a .env exists

        load_dotenv(path, override=False)


def _number(env: Mapping[str, str], name: str, default: float, *, minimum: float = 0.001) -> float:
    raw = env.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(f"{name}={raw!r} is not a number; set it to a number such as {default}.") from None
    if not math.isfinite(value):
        raise ConfigurationError(f"{name}={raw!r} is not a finite number; set it to a number such as {default}.")
    if value < minimum:
        raise ConfigurationError(f"{name}={raw!r} is too small; it must be at least {minimum}.")
    return value


def key_text_problem(key: str) -> str | None:
    """Why a key cannot be sent in an HTTP header (a control, invisible or non-ASCII character), or None.

    The answer names the character's code point and position, never the key's text.
    """
    for position, char in enumerate(key, start=1):
        if char.isascii() and char.isprintable():
            continue
        name = f"U+{ord(char):04X} at position {position}"
        if unicodedata.category(char) in _INVISIBLE_CATEGORIES or char.isspace():
            return f"a control, invisible or space character ({name})"
        return f"a non-ASCII character ({name}); API keys are plain ASCII"
    return None


# Control, format (zero-width, BOM), line and paragraph separators, private use, unassigned.
_INVISIBLE_CATEGORIES = ("Cc", "Cf", "Zl", "Zp", "Co", "Cn")


def _env_key(name: str, raw: str) -> str:
    key = raw.strip()
    problem = key_text_problem(key)
    if problem:
        raise ConfigurationError(f"{name} contains {problem}; set it to the key alone, copied again from the "
                                 "provider's console.")
    return key


def _whole(env: Mapping[str, str], name: str, default: int, *, minimum: int) -> int:
    """A whole-number setting: "3" is fine; "3.5", "nan", "inf", "1e3" and negatives below minimum are refused."""
    raw = env.get(name)
    if raw is None:
        return default
    text = raw.strip()
    if not re.fullmatch(r"[+-]?[0-9]+", text):
        raise ConfigurationError(f"{name}={raw!r} is not a whole number; set it to a whole number such as {default}.")
    value = int(text)
    if value < minimum:
        raise ConfigurationError(f"{name}={raw!r} is too small; it must be a whole number of at least {minimum}.")
    return value


def _secret(raw: str | None) -> str | None:
    """ORCHESTRATOR_SECRET_KEY: empty means unset (the key file is used); only spaces is a mistake, refused."""
    if raw is None or raw == "":
        return None
    if not raw.strip():
        raise ConfigurationError(
            "ORCHESTRATOR_SECRET_KEY contains only whitespace; set it to the secret the keys were saved with, "
            "or remove the variable to use the key file secret.key."
        )
    return raw.strip()


def _choice(env: Mapping[str, str], name: str, allowed: tuple[str, ...]) -> str | None:
    """The value of a setting with a fixed set of values; None when unset (the default applies)."""
    value = env.get(name)
    if value is not None and value not in allowed:
        raise ConfigurationError(f"{name}={value!r} is not one of {', '.join(allowed)}.")
    return value


def _flag(env: Mapping[str, str], name: str) -> bool:
    """A switch that is on unless set to 0, false, no or off."""
    return env.get(name, "true").strip().lower() not in ("0", "false", "no", "off")


def _check_url(name: str, url: str) -> str:
    from .connections import url_problem  # noqa: PLC0415 - connections imports this module's types

    if not url.startswith(("http://", "https://")):
        raise ConfigurationError(f"{name}={redact_url(url)!r} must start with http:// or https://.")
    if problem := url_problem(url):
        raise ConfigurationError(f"{name}={redact_url(url)!r} is not a usable URL ({problem}); set it to a URL "
                                 "such as http://127.0.0.1:1234.")
    return url.rstrip("/")


def _hosts(raw: str | None) -> tuple[str, ...]:
    if raw is None:
        return LOCAL_PROVIDERS
    # LOCAL_HOSTS="" (or only commas and spaces) means "probe no local host".
    hosts = tuple(h.strip().lower() for h in raw.split(",") if h.strip())
    unknown = [h for h in hosts if h not in LOCAL_PROVIDERS]
    if unknown:
        raise ConfigurationError(
            f"LOCAL_HOSTS has unknown host(s) {', '.join(unknown)}; use {', '.join(LOCAL_PROVIDERS)}."
        )
    return hosts


def _priorities(raw: str) -> dict[str, int]:
    """MODEL_PRIORITIES="openai:gpt-4o-mini=1,lmstudio:qwen=2" -> {model id: priority}."""
    result: dict[str, int] = {}
    for item in filter(None, (p.strip() for p in raw.split(","))):
        model_id, sep, value = item.rpartition("=")
        if not sep or not value.strip().lstrip("-").isdigit():
            raise ConfigurationError(
                f"MODEL_PRIORITIES item {item!r} must look like provider:model=NUMBER, comma separated."
            )
        result[model_id.strip()] = int(value)
    return result
