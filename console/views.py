"""Streamlit-free shaping of core data for the pages: icons, table rows, captions, time ranges, CSV.

Every function here takes plain core objects and returns plain values, so it is tested without a
running app and the pages stay a list of ``st.*`` calls.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any

from orchestrator_core.errors import (
    AllModelsFailedError,
    ContentFilteredError,
    OrchestratorError,
    StreamInterruptedError,
)
from orchestrator_core.providers.base import LocalHost
from orchestrator_core.providers.registry import HOSTED_PROVIDERS, LOCAL_PROVIDERS, PROVIDERS
from orchestrator_core.types import KeyCheck, ModelFacts, ModelState, ModelStatus, OrchestratedResult

from . import costs

if TYPE_CHECKING:
    from orchestrator_core.loader import HostStatus
    from orchestrator_core.store.failures import FailureEntry
    from orchestrator_core.store.keys import KeyInfo
    from orchestrator_core.store.metrics import ModelStats
    from orchestrator_core.store.tokens import TokenInfo

STATE_ICONS: dict[ModelState, str] = {
    ModelState.EXTERNAL_READY: "🌐",
    ModelState.LOADED: "✅",
    ModelState.SLEEPING: "😴",
    ModelState.LOADING: "🔄",
    ModelState.DOWNLOADING: "⬇️",
    ModelState.NOT_LOADED: "💤",
    ModelState.UNLOADING: "⏏️",
    ModelState.LOAD_FAILED: "⛔",
    ModelState.COOLING_DOWN: "⏸️",
    ModelState.HOST_DOWN: "❌",
    ModelState.EXTERNAL_NO_KEY: "❌",
    ModelState.EXTERNAL_KEY_REJECTED: "🚫",
}
STATE_WORDS: dict[ModelState, str] = {
    ModelState.EXTERNAL_READY: "hosted, ready",
    ModelState.LOADED: "loaded",
    ModelState.SLEEPING: "sleeping (wakes on request)",
    ModelState.LOADING: "loading",
    ModelState.DOWNLOADING: "downloading",
    ModelState.NOT_LOADED: "not loaded",
    ModelState.UNLOADING: "unloading",
    ModelState.LOAD_FAILED: "load failed",
    ModelState.COOLING_DOWN: "cooling down",
    ModelState.HOST_DOWN: "host down",
    ModelState.EXTERNAL_NO_KEY: "no key",
    ModelState.EXTERNAL_KEY_REJECTED: "key rejected",
}
KEY_CHECK_TEXT: dict[KeyCheck, str] = {
    KeyCheck.OK: "✅ OK",
    KeyCheck.REJECTED: "❌ rejected",
    KeyCheck.UNVERIFIED: "⚠️ could not verify",
}
INACTIVE = "➖ inactive"


# -- text from hosts and models ---------------------------------------------------------------------
# Signs that Markdown, GFM, Streamlit's directives (:red[..]) or HTML read as syntax wherever they stand; the
# rest only at the start of a line (lists, headings by underline) or as a bare link (http://, www.).
# CommonMark shows a backslash-escaped ASCII punctuation character as itself.
_SIGNS_ANYWHERE = re.compile(r"([\\`*_\[\]<>#|~$&])")
_SIGNS_AT_LINE_START = re.compile(r"^([ \t]*)([-+=]|\d+)([.)]?)", re.MULTILINE)
_BARE_LINK = re.compile(r"(:(?=//)|(?<=\bwww)\.)", re.IGNORECASE)
# An image needs one of these right after its ] (inline, reference, or a reference's definition).
_IMAGE_TAILS = ("](", "][", "]:")
_EMPTY_ALT = re.compile(r"!\[\s*\]")
_NOT_AN_IMAGE = "!\u200b["  # a zero-width space between ! and [: the same text, but only ever a link


def plain(text: str) -> str:
    """Text from a host or a model (ids, names, error messages) as Markdown that shows it literally."""
    text = _SIGNS_ANYWHERE.sub(r"\\\1", text)
    text = _SIGNS_AT_LINE_START.sub(_escape_line_start, text)
    return _BARE_LINK.sub(r"\\\1", text)


def _escape_line_start(match: re.Match[str]) -> str:
    indent, sign, dot = match.groups()
    if sign.isdigit():  # "1." or "1)" starts an ordered list; a bare number does not
        return f"{indent}{sign}\\{dot}" if dot else match.group(0)
    return f"{indent}\\{sign}{dot}"


def answer_markdown(text: str) -> str:
    """A model's answer with its Markdown kept, but no image the browser would fetch by itself.

    ``![alt](url)`` (and reference-style images) become the link ``[alt](url)`` after a visible "!" (an empty
    alt reads "image"): a prompt-injected answer can no longer send the conversation to a host in an image
    URL, and the operator sees the link. Raw HTML needs no change: without unsafe_allow_html Streamlit shows
    it as text. Code blocks are not spared: a parser that disagreed with the browser's about where a block
    ends would let an image through. Without any ``](``, ``][`` or ``]:`` there can be no image, so code such
    as Rust's ``vec![1, 2]`` is then left exactly as written.
    """
    if not any(tail in text for tail in _IMAGE_TAILS):
        return text
    return _EMPTY_ALT.sub(_NOT_AN_IMAGE + "image]", text).replace("![", _NOT_AN_IMAGE)


# -- times ------------------------------------------------------------------------------------------
def local_time(value: datetime | float | None, *, seconds: bool = True) -> str:
    """A timestamp in the server's local time, or "" when there is none."""
    if value is None:
        return ""
    when = datetime.fromtimestamp(value, UTC) if isinstance(value, (int, float)) else value
    return when.astimezone().strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


def clock_time(value: datetime | None) -> str:
    """HH:MM:SS in local time, for "until" hints."""
    return value.astimezone().strftime("%H:%M:%S") if value is not None else ""


RANGES: dict[str, float | None] = {
    "Last hour": 3600.0,
    "Last 24 hours": 86400.0,
    "Last 7 days": 7 * 86400.0,
    "Custom": None,
}
_NICE_BUCKETS = (10, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 3 * 3600, 6 * 3600, 12 * 3600, 86400)


@dataclass(frozen=True)
class TimeRange:
    since: float
    until: float

    @property
    def span_s(self) -> float:
        return self.until - self.since


def resolve_range(choice: str, now: float, custom: Sequence[date] = ()) -> TimeRange:
    """Epoch seconds [since, until) for a range choice; "Custom" spans whole local days from custom[0] to custom[-1]."""
    span = RANGES.get(choice)
    if span is not None:
        return TimeRange(now - span, now)
    if not custom:
        return TimeRange(now - 86400.0, now)
    first, last = min(custom[0], custom[-1]), max(custom[0], custom[-1])
    start = datetime.combine(first, time.min).astimezone()
    end = datetime.combine(last + timedelta(days=1), time.min).astimezone()
    return TimeRange(start.timestamp(), end.timestamp())


def bucket_seconds(span_s: float, target_points: int = 60) -> int:
    """A round bucket size that gives about target_points points over span_s."""
    wanted = max(span_s, 1.0) / max(target_points, 1)
    return next((b for b in _NICE_BUCKETS if b >= wanted), _NICE_BUCKETS[-1])


# -- model status -----------------------------------------------------------------------------------
def state_icon(state: ModelState) -> str:
    return STATE_ICONS.get(state, "❔")


def state_text(status: ModelStatus) -> str:
    """Icon and words, e.g. "⏸️ cooling down until 14:02:11"."""
    words = STATE_WORDS.get(status.state, status.state.value)
    if status.state is ModelState.COOLING_DOWN and status.cooldown_until is not None:
        words += f" until {clock_time(status.cooldown_until)}"
    elif status.progress is not None:
        words += f" {status.progress:.0f}%"
    return f"{state_icon(status.state)} {words}"


def model_facts(facts: ModelFacts | None) -> str:
    """ "4.4 GB · context 4,096 of 32,768 · 5.1 GB in memory", from what the host reports; "" when nothing."""
    if facts is None:
        return ""
    parts = []
    if facts.size_bytes:
        parts.append(_size(facts.size_bytes))
    if facts.context_length and facts.max_context_length:
        parts.append(f"context {facts.context_length:,} of {facts.max_context_length:,}")
    elif facts.context_length or facts.max_context_length:
        parts.append(f"context {facts.context_length or facts.max_context_length:,}"
                     + ("" if facts.context_length else " max"))
    if facts.memory_bytes:
        parts.append(f"{_size(facts.memory_bytes)} in memory")
    return " · ".join(parts)


def _size(value: int) -> str:
    return f"{value / 1e9:.1f} GB" if value >= 1e9 else f"{value / 1e6:.0f} MB"


def picker_status(status: ModelStatus | None) -> str:
    """The chosen model's state and reason, shown beside a picker whose entries stay plain model ids.

    A picker entry must not carry the status: the browser keeps a selectbox's choice as the entry's label, so
    a label that changes (💤 -> ✅) no longer matches on the next run and Streamlit falls back to the first entry.
    """
    if status is None:
        return "❔ status unknown"
    detail = _short(status.detail, 120)
    if detail.lower() == STATE_WORDS.get(status.state, status.state.value).lower():
        detail = ""  # the host's detail only repeats the state ("loaded — loaded")
    text = f"{state_text(status)} — {detail}" if detail else state_text(status)
    facts = model_facts(status.facts)
    return plain(f"{text} · {facts}" if facts else text)  # a caption: Markdown


def connection(model_id: str) -> str:
    """The connection a model id names: its prefix before the first ":" ("lmstudio", "openai", a custom name)."""
    return model_id.partition(":")[0]


def grouped(statuses: Mapping[str, ModelStatus]) -> list[str]:
    """Model ids grouped by connection for a picker: local hosts first, then hosted, each group in its order."""
    def key(item: tuple[int, str]) -> tuple[bool, str, int]:
        position, model_id = item
        return (not statuses[model_id].local, connection(model_id), position)

    return [m for _, m in sorted(enumerate(statuses), key=key)]


def default_model(statuses: Mapping[str, ModelStatus], last_used: str | None, keys_ok: Iterable[str]) -> str:
    """The model a picker starts on: the last used one if it can answer, else a loaded local model, else a
    hosted one whose key tested OK, else any ready or usable one, else the first."""
    ok = set(keys_ok)
    ready = [m for m, s in statuses.items() if s.state.ready]
    last = statuses.get(last_used) if last_used is not None else None
    candidates: list[list[str]] = [
        [last.model_id] if last is not None and last.state.usable else [],
        [m for m in ready if statuses[m].local],
        [m for m in ready if not statuses[m].local and connection(m) in ok],
        ready,
        [m for m, s in statuses.items() if s.state.usable],
        list(statuses),
    ]
    return next(group[0] for group in candidates if group)


def ready_count(statuses: Iterable[ModelStatus]) -> int:
    return sum(s.state.ready for s in statuses)


def state_counts(statuses: Iterable[ModelStatus]) -> dict[str, int]:
    """Counts for the overview: ready, loaded (local), cooling down, unavailable, total."""
    items = list(statuses)
    unavailable = (ModelState.HOST_DOWN, ModelState.EXTERNAL_NO_KEY, ModelState.EXTERNAL_KEY_REJECTED,
                   ModelState.LOAD_FAILED)
    return {
        "total": len(items),
        "ready": sum(s.state.ready for s in items),
        "loaded": sum(s.state is ModelState.LOADED for s in items),
        "cooling": sum(s.state is ModelState.COOLING_DOWN for s in items),
        "unavailable": sum(s.state in unavailable for s in items),
    }


DASH = "—"  # a figure there is none of: never "None", never an empty cell that reads like zero


def dash(value: object, fmt: str = "{}") -> str:
    """A figure for a table cell, or "—" when there is none."""
    return DASH if value is None or value == "" else fmt.format(value)


def model_rows(
    statuses: Sequence[ModelStatus],
    entries: Sequence[Any],
    stats: Mapping[str, ModelStats],
) -> list[dict[str, Any]]:
    """One compact row per registered model: state, call figures, cooldown, priority; active first.

    The long texts (the host's detail, the whole last error, the source) are in model_detail, shown for the
    picked model: as columns they pushed the figures off a 1400 px screen.
    """
    by_id = {s.model_id: s for s in statuses}
    rows = []
    for entry in sorted(entries, key=lambda e: (not e.active, e.priority, e.model_id)):
        status = by_id.get(entry.model_id)
        stat = stats.get(entry.model_id)
        rows.append({
            "Model": entry.model_id,
            "State": state_text(status) if status else INACTIVE,
            "Calls": stat.calls if stat else 0,
            "Success": dash(stat.success_rate if stat else None, "{:.0%}"),
            "p50 ms": dash(stat.p50_ms if stat else None, "{:,.0f}"),
            "p95 ms": dash(stat.p95_ms if stat else None, "{:,.0f}"),
            "Last error": _last_error(stat),
            "Cooldown until": dash(clock_time(status.cooldown_until) if status else None),
            "Priority": entry.priority,
        })
    return rows


def model_detail(status: ModelStatus | None, entry: Any, stat: ModelStats | None) -> list[tuple[str, str]]:
    """(label, text) pairs for the picked model's detail panel: what the table leaves out."""
    provider = PROVIDERS[entry.provider].display_name if entry.provider in PROVIDERS else entry.provider
    error = f"{stat.last_error_kind} at {local_time(stat.last_error_at)}: {_short(stat.last_error or '', 400)}" \
        if stat and stat.last_error_kind else ""
    return [
        ("Provider", provider),
        ("State", state_text(status) if status else INACTIVE),
        ("Detail", status.detail if status else "deactivated: not offered, never a fallback"),
        ("Last check", dash(local_time(status.checked_at) if status else None)),
        ("Last call", dash(local_time(stat.last_call_at) if stat else None)),
        ("Last error", dash(error)),
        ("Cooldown until", dash(local_time(status.cooldown_until) if status and status.cooldown_until else None)),
        ("Size, context, memory", dash(model_facts(status.facts) if status else None)),
        ("Priority", str(entry.priority)),
        ("Source", entry.source),
    ]


def _last_error(stat: ModelStats | None) -> str:
    if stat is None or stat.last_error_kind is None:
        return DASH
    return f"{stat.last_error_kind} at {clock_time(stat.last_error_at)}"


def _round(value: float | None) -> float | None:
    return round(value, 1) if value is not None else None


def _short(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# -- hosts and keys ---------------------------------------------------------------------------------
def host_line(host: HostStatus, seen_up: bool = True) -> str:
    """One line per local host for the sidebar and the overview; grey, not red, for a host never seen up."""
    if host.reachable:
        return f"🟢 {host.display_name}: {host.loaded} loaded of {host.models}"
    if not seen_up:
        return f"⚪ {host.display_name}: not running (never seen up)"
    return f"🔴 {host.display_name}: not reachable"


def seen_up(entries: Iterable[Any]) -> set[str]:
    """Local hosts that were up at least once: they listed a model, which the registry keeps as discovered."""
    return {e.provider for e in entries if e.source == "discovered"}


def probe_hint(hosts: Sequence[HostStatus], seen: set[str]) -> str | None:
    """How to stop checking hosts that never answered: the LOCAL_HOSTS line to set (seeded hosts), or to
    disable an added connection (LOCAL_HOSTS does not name those), or None."""
    never = [h for h in hosts if not h.reachable and h.provider not in seen]
    if not never or len(never) == len(hosts):
        return None  # nothing to hide, or every host: then Getting started says what to start
    seeded = [h for h in never if h.provider in LOCAL_PROVIDERS]
    added = [h for h in never if h not in seeded]
    fixes = []
    if seeded:
        keep = ",".join(h.provider for h in hosts if h.provider in LOCAL_PROVIDERS and h not in never)
        fixes.append(f"To stop checking {_names(seeded)}, set LOCAL_HOSTS={keep} in .env (or the environment) and "
                     "restart the console.")
    if added:
        fixes.append(f"To stop checking {_names(added)}, disable it on the Connections page.")
    return f"{_names(never)} never answered here. " + " ".join(fixes)


def _names(hosts: Sequence[HostStatus]) -> str:
    return ", ".join(h.display_name for h in hosts)


def key_rows(keys: Sequence[KeyInfo]) -> list[dict[str, Any]]:
    """The keys table: masked keys only, with the last test result."""
    return [
        {
            "Provider": PROVIDERS[k.provider].display_name if k.provider in PROVIDERS else k.provider,
            "Label": k.label,
            "Key": k.masked,
            "Source": "environment (read-only)" if k.source == "env" else "stored",
            "Last test": KEY_CHECK_TEXT.get(k.last_test_status, "") if k.last_test_status else "not tested",
            "Latency ms": dash(k.last_test_latency_ms, "{:.0f}"),
            "Tested at": local_time(k.last_tested_at),
            "Detail": _short(k.last_test_detail or "", 160),
        }
        for k in keys
    ]


def token_rows(tokens: Sequence[TokenInfo]) -> list[dict[str, Any]]:
    """The gateway tokens table: name, scope, created, last used, state; never the token."""
    return [
        {
            "Name": t.name,
            "Scope": t.scope,
            "Created": local_time(t.created_at),
            "Last used": local_time(t.last_used_at) if t.last_used_at else "never",
            "State": "active" if t.active else f"revoked {local_time(t.revoked_at)}",
        }
        for t in tokens
    ]


def key_option(key: KeyInfo) -> str:
    """A key picker entry: provider, label and mask, never the key."""
    source = " (environment)" if key.source == "env" else ""
    return f"{key.provider} · {key.label} · {key.masked}{source}"


def provider_key_rows(keys: Sequence[KeyInfo]) -> list[dict[str, Any]]:
    """Per hosted provider: whether a key is configured and where it comes from."""
    rows = []
    for name in HOSTED_PROVIDERS:
        cls = PROVIDERS[name]
        mine = [k for k in keys if k.provider == name]
        if mine:
            sources = sorted({"environment" if k.source == "env" else "stored" for k in mine})
            state = f"✅ {len(mine)} key{'s' if len(mine) > 1 else ''} ({', '.join(sources)})"
        elif not cls.needs_key:
            state = "✅ no key needed"
        else:
            state = f"➕ none: add one on the API keys page{cls.key_env_hint()}"
        rows.append({"Provider": cls.display_name, "Keys": state})
    return rows


def key_env_names() -> str:
    """The documented key variables of the hosted kinds, for a hint: 'OPENAI_API_KEY, ANTHROPIC_API_KEY, …'."""
    return ", ".join(PROVIDERS[name].key_env_vars[0] for name in HOSTED_PROVIDERS if PROVIDERS[name].key_env_vars)


def key_test_message(key: KeyInfo, status: KeyCheck, detail: str, latency_ms: float) -> str:
    """A toast after a key test."""
    return f"{key.provider} · {key.label}: {KEY_CHECK_TEXT[status]} in {latency_ms:.0f} ms — {_short(detail, 120)}"


# The page each Getting-started step is done on: (page file, link label).
STEP_LINKS = {
    "keys": ("app_pages/keys.py", "Add a key on the API keys page"),
    "models": ("app_pages/models.py", "Open the Models page"),
    "connections": ("app_pages/connections.py", "Add a host on the Connections page"),
}


def next_steps(hosts: Sequence[HostStatus], keys: Sequence[KeyInfo],
               statuses: Sequence[ModelStatus]) -> list[tuple[str, str | None]]:
    """What a newcomer should do next, in order, each with the STEP_LINKS page it is done on (or None)."""
    steps: list[tuple[str, str | None]] = []
    if hosts and not any(h.reachable for h in hosts):
        local = [PROVIDERS[name] for name in LOCAL_PROVIDERS]
        starts = "; or ".join(cls.start_hint for cls in local if issubclass(cls, LocalHost))
        urls = " / ".join(cls.base_url_env_vars[0] for cls in local if cls.base_url_env_vars)
        steps.append((f"No local host is reachable. To use one, {starts}; or point {urls} at where it runs, or "
                      "add the host on the Connections page.", "connections"))
    if not keys:
        steps.append((f"No API key yet. Add one on the API keys page (or set {key_env_names()} in the environment) "
                      "to use hosted models and to have a fallback when local models fail.", "keys"))
    if statuses and not any(s.state.usable for s in statuses):
        steps.append(("No model is usable right now; see the Models page for why.", "models"))
    elif not statuses:
        steps.append(("No model is registered yet: models appear when a local host is reachable, or add a hosted "
                      "model (for example openai:gpt-4o-mini) on the Models page.", "models"))
    return steps


# -- chat -------------------------------------------------------------------------------------------
def answer_caption(result: OrchestratedResult) -> str:
    """Under an answer: who answered, latency, time to first token, tokens, cost, fallback path."""
    parts = [f"answered by {result.model_id}", f"{result.latency_ms:,.0f} ms"]
    if result.ttft_ms is not None:
        parts.append(f"first token {result.ttft_ms:,.0f} ms")
    usage = result.result.usage
    if usage.prompt_tokens is not None or usage.completion_tokens is not None:
        parts.append(f"tokens {usage.prompt_tokens or 0} in / {usage.completion_tokens or 0} out")
    parts.append(costs.cost_caption(result))
    if result.fell_back:
        parts.append("fallback " + " → ".join(result.fallback_path))
    return " · ".join(parts)


REFUSED_ICON = "🛡️"  # a refusal or a safety block: the model works, the prompt was turned down


def refused(result: OrchestratedResult) -> bool:
    """True when a model tried before the one that answered refused the prompt or blocked it for safety."""
    return any(a.error_kind == ContentFilteredError.kind for a in result.attempts)


def fallback_notice(result: OrchestratedResult) -> str:
    """The system message after an automatic fallback: what failed and which model answered instead."""
    failed = [a for a in result.attempts if a.outcome != "ok"]
    reasons = "; ".join(f"{a.model}: {_short(a.error or a.error_kind or a.outcome, 160)}" for a in failed)
    first = failed[0] if failed else None
    verb = "declined" if first and first.error_kind == ContentFilteredError.kind else "could not answer"
    return f"{result.requested_model} {verb} ({reasons}). {result.model_id} answered instead."


def _content_filter(exc: OrchestratorError) -> bool:
    cause = exc.cause if isinstance(exc, StreamInterruptedError) else exc
    return isinstance(cause, ContentFilteredError)


def notice_icon(exc: OrchestratorError) -> str:
    """The avatar of a failure notice: a shield for a refusal or a safety block, a warning otherwise."""
    if isinstance(exc, AllModelsFailedError) and exc.attempts:
        return REFUSED_ICON if all(a.error_kind == ContentFilteredError.kind for a in exc.attempts) else "⚠️"
    return REFUSED_ICON if _content_filter(exc) else "⚠️"


def cut_caption(model_id: str, exc: StreamInterruptedError) -> str:
    """Under a partial answer: that it is cut short, and whether a safety stop cut it."""
    return f"{model_id} · {'cut by a safety stop' if _content_filter(exc) else 'broke off'}"


def failure_notice(model_id: str, exc: OrchestratorError, alternative: str | None) -> str:
    """The system message when a call failed and no automatic fallback answered."""
    if isinstance(exc, AllModelsFailedError) and exc.attempts:
        reasons = "; ".join(f"{a.model}: {_short(a.error or a.error_kind or a.outcome, 160)}" for a in exc.attempts)
        text = f"No model could answer ({reasons})."
    elif _content_filter(exc):
        text = exc.message  # it names the model and the provider's reason itself
    else:
        text = f"{model_id} failed: {exc.message}"
    if alternative:
        text += f" Suggested instead: {alternative}."
    else:
        text += " No other model is usable right now; see the Models page."
    return text


_ONLY_A_CLOCK = re.compile(r"^\s*(loading|downloading)?( for)? *[\d.]+ ?s\s*$", re.IGNORECASE)


def only_cooling(model_id: str, exc: OrchestratorError) -> bool:
    """True when the call failed only because the model asked for was cooling down (nothing else was tried)."""
    return isinstance(exc, AllModelsFailedError) and bool(exc.attempts) and all(
        a.model == model_id and a.error_kind == "cooling_down" for a in exc.attempts)


def cooldown_notice(entry: FailureEntry, alternative: str | None) -> str:
    """The notice when the one model asked for is cooling down: until when, why, and what to do."""
    text = (f"{entry.model_id} is cooling down until {clock_time(entry.until)} after {entry.error_kind}: "
            f"{_short(entry.message, 200)}. Reset its cooldown to try it again now")
    return text + (f", or switch to {alternative}." if alternative else ".")


def compare_progress(phase: str, elapsed_s: float, first_token_s: float | None) -> str:
    """A Compare column's progress line while its model works: what it does, its clock, its first-token time."""
    words = {"loading": "🔄 loading the model", "streaming": "✍️ answering"}.get(phase, "⏳ waiting for the first token")
    first = f" · first token after {first_token_s:.1f} s" if first_token_s is not None else ""
    return f"{words}… {elapsed_s:.1f} s{first}"


def compare_error(model_id: str, exc: OrchestratorError) -> str:
    """A Compare column's error as sentences: one per attempt, never the multi-line report run together."""
    if isinstance(exc, AllModelsFailedError) and exc.attempts:
        return " ".join(_sentence(f"{a.error or a.error_kind or a.outcome}") for a in exc.attempts)
    return _sentence(exc.message)


def _sentence(text: str) -> str:
    text = " ".join(text.split()).rstrip()
    if not text:
        return ""
    text = text[0].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."


def load_label(model_id: str, elapsed_s: float, detail: str = "") -> str:
    """The st.status label while a model loads (Markdown: the id and the host's detail are escaped).

    One clock: a detail that only says how long it has been loading ("loading for 3s") is left out.
    """
    tail = f" — {_short(detail, 60)}" if detail and not _ONLY_A_CLOCK.match(detail) else ""
    return plain(f"Loading {model_id}… {elapsed_s:.1f} s{tail}")


# -- CSV --------------------------------------------------------------------------------------------
def csv_text(rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """Metric rows as CSV with a header, plus an ISO time column after the epoch ts."""
    out = io.StringIO()
    header = list(columns)
    if "ts" in header:
        header.insert(header.index("ts") + 1, "time_utc")
    writer = csv.DictWriter(out, fieldnames=header, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        values = dict(row)
        if "ts" in values and values["ts"] is not None:
            values["time_utc"] = datetime.fromtimestamp(values["ts"], UTC).isoformat()
        writer.writerow(values)
    return out.getvalue()
