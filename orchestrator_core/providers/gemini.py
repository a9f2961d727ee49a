"""Google Gemini Developer API (generateContent): x-goog-api-key auth, roles user/model, no stream end marker."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote

from ..errors import bad_response, content_filtered
from ..types import ChatParams, ChatResult, Message, StreamEvent, TextDelta, Usage, token_count
from .base import Provider, system_and_turns

if TYPE_CHECKING:
    import httpx

_MAX_MODEL_PAGES = 5  # 1000 models a page: more pages than this means something is wrong


class GeminiProvider(Provider):
    """POST {base}/{version}/models/{model}:generateContent; the base URL has no version."""

    kind = name = "google"
    display_name = "Google Gemini"
    default_base_url = "https://generativelanguage.googleapis.com"
    base_url_env_vars = ("GOOGLE_BASE_URL", "GEMINI_BASE_URL")
    key_env_vars = ("GOOGLE_API_KEY", "GEMINI_API_KEY")
    needs_key = True
    price_table_id = "google"
    option_names = ("api_version",)  # v1 or v1beta; the seeded connection's: GEMINI_API_VERSION
    # google-genai 3.x calls /v1 by default (GOOGLE_AI_API_DEFAULT_VERSION); v1beta, the default before it,
    # stays selectable with GEMINI_API_VERSION and serves the same generateContent shapes.
    default_api_version: ClassVar[str] = "v1"
    # Candidate finishReasons that mean the answer was blocked, not finished: never a blank success.
    # (MAX_TOKENS, LANGUAGE, OTHER and the tool-call reasons are not safety stops.)
    blocked_finish_reasons: ClassVar[frozenset[str]] = frozenset({
        "SAFETY", "RECITATION", "PROHIBITED_CONTENT", "BLOCKLIST", "SPII",
        "IMAGE_SAFETY", "IMAGE_PROHIBITED_CONTENT", "IMAGE_RECITATION",
    })

    def __init__(
        self, client: httpx.Client, api_key: str | None = None, *, api_version: str | None = None, **options: Any
    ) -> None:
        super().__init__(client, api_key, **options)
        self.api_version = api_version or self.default_api_version

    # -- request building ---------------------------------------------------------------------
    def headers(self) -> dict[str, str]:
        # The key goes in a header, never in ?key=: URLs end up in logs.
        return {"x-goog-api-key": self.require_key()}

    def body(self, messages: list[Message], params: ChatParams) -> dict[str, Any]:
        """The generateContent request: roles user/model, the system prompt as systemInstruction."""
        system, turns = system_and_turns(messages)
        body: dict[str, Any] = {
            "contents": [
                {"role": "model" if role == "assistant" else "user", "parts": [{"text": t} for t in texts]}
                for role, texts in turns
            ]
        }
        if system:
            body["systemInstruction"] = {"parts": [{"text": system}]}
        config = {
            "temperature": params.temperature,
            "maxOutputTokens": params.max_tokens,
            "topP": params.top_p,
            "stopSequences": list(params.stop) if params.stop else None,
        }
        config = {k: v for k, v in config.items() if v is not None}
        if config:
            body["generationConfig"] = config
        return body

    def model_path(self, model: str, method: str) -> str:
        # The model id is the caller's text and the only one put in a URL path: quoted whole, so '../', '?' or
        # '#' in it cannot send the key to another endpoint ("../../v1beta/cachedContents#" did).
        return f"/{self.api_version}/models/{quote(model.removeprefix('models/'), safe='')}:{method}"

    # -- operations ---------------------------------------------------------------------------
    def chat(self, model: str, messages: list[Message], params: ChatParams) -> ChatResult:
        data = self.request_json(
            "POST", self.model_path(model, "generateContent"), model=model, headers=self.headers(),
            json=self.body(messages, params),
        )
        if not isinstance(data, dict):
            raise bad_response(self.name, model, "the answer is not a JSON object")
        if data.get("error"):
            raise self.in_band_error(data, model)
        candidate = self._first_candidate(data, model)
        if candidate is None:
            raise bad_response(self.name, model, "no candidates in the answer")
        text = _candidate_text(candidate)
        self.raise_for_block(model, candidate, text)
        # An empty text with finishReason MAX_TOKENS is a truncated answer (thinking used the budget), not an error.
        return ChatResult(
            text=text,
            finish_reason=candidate.get("finishReason"),
            usage=_usage(data.get("usageMetadata")),
            model=str(data.get("modelVersion") or model),
            provider=self.name,
        )

    def stream_chat(self, model: str, messages: list[Message], params: ChatParams) -> Iterator[StreamEvent]:
        parts = self.answer_text(model)
        last: dict[str, Any] = {}  # the latest candidate that said why it stopped
        usage = Usage()
        answered_by = model
        seen_any = False
        lines = self.stream_lines(
            "POST", self.model_path(model, "streamGenerateContent"), model=model,
            headers={"Accept": "text/event-stream", **self.headers()}, params={"alt": "sse"},
            json=self.body(messages, params),
        )
        with contextlib.closing(lines):
            for chunk in _stream_payloads(lines, self.name, model):
                seen_any = True
                if chunk.get("error"):
                    raise self.in_band_error(chunk, model)
                candidate = self._first_candidate(chunk, model)
                text = _candidate_text(candidate) if candidate else ""
                if text:
                    parts.add(text)
                    yield TextDelta(text)
                last = candidate if candidate and candidate.get("finishReason") else last
                usage = _usage(chunk["usageMetadata"]) if chunk.get("usageMetadata") else usage
                answered_by = str(chunk.get("modelVersion") or answered_by)
        # Gemini has no end marker: the stream ends with the body, so only a stream with no events is broken.
        if not seen_any:
            raise bad_response(self.name, model, "the stream ended without any event")
        self.raise_for_block(model, last, str(parts))
        yield ChatResult(str(parts), last.get("finishReason"), usage, answered_by, self.name)

    def list_models(self) -> list[str]:
        names: list[str] = []
        params: dict[str, Any] = {"pageSize": 1000}
        for page in range(_MAX_MODEL_PAGES):
            data = self.request_json("GET", f"/{self.api_version}/models", headers=self.headers(), params=params)
            if not isinstance(data, dict):
                raise bad_response(self.name, None, "the model list is not a JSON object")
            # A first page without a "models" array is not a model list (a proxy's or another API's 200);
            # a later page may leave out an empty one (proto3 JSON drops empty lists).
            models = data.get("models", [] if page else None)
            if not isinstance(models, list):
                raise bad_response(self.name, None, "the model list has no 'models' array")
            names += [_model_name(m) for m in models if _generates_content(m)]
            if not data.get("nextPageToken"):
                break
            params = {"pageSize": 1000, "pageToken": data["nextPageToken"]}
        return names

    # -- helpers --------------------------------------------------------------------------------
    def _first_candidate(self, data: dict[str, Any], model: str) -> dict[str, Any] | None:
        """candidates[0]; a blocked prompt (promptFeedback.blockReason, no candidates) is ContentFilteredError."""
        candidates = data.get("candidates")
        if isinstance(candidates, list) and candidates and isinstance(candidates[0], dict):
            return candidates[0]
        feedback = data.get("promptFeedback") or {}
        if reason := feedback.get("blockReason"):
            detail = str(feedback.get("blockReasonMessage") or "") or _blocked_categories(feedback)
            raise content_filtered(self.name, model, reason=str(reason), field="promptFeedback.blockReason",
                                   what="blocked the prompt", detail=detail, secrets=self.secrets)
        return None

    def raise_for_block(self, model: str, candidate: dict[str, Any], text: str) -> None:
        """A candidate stopped for safety (SAFETY, RECITATION, ...) is never a blank or silently cut success."""
        reason = candidate.get("finishReason")
        if reason in self.blocked_finish_reasons:
            raise content_filtered(self.name, model, reason=str(reason), field="finishReason", partial_text=text,
                                   detail=_blocked_categories(candidate), secrets=self.secrets)


def _stream_payloads(lines: Iterable[str], provider: str, model: str) -> Iterator[dict[str, Any]]:
    """The JSON objects of a Gemini stream: one per SSE ``data:`` event, and bare JSON lines, because
    errors can arrive without the ``data:`` prefix (python-genai checks for them the same way)."""
    data: list[str] = []
    bare: list[str] = []
    for line in lines:
        if line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
        elif not line.strip():
            if data:
                yield from _objects("\n".join(data), provider, model)
                data = []
        elif not line.startswith((":", "event:", "id:", "retry:")):
            bare.append(line)
    if data:
        yield from _objects("\n".join(data), provider, model)
    if bare:
        yield from _objects("\n".join(bare), provider, model)


def _objects(text: str, provider: str, model: str) -> Iterator[dict[str, Any]]:
    """The object(s) in one payload: a JSON object, or an array of them (a non-SSE stream body)."""
    try:
        value = json.loads(text)
    except ValueError:
        raise bad_response(provider, model, "a stream event is not valid JSON") from None
    for item in value if isinstance(value, list) else [value]:
        if not isinstance(item, dict):
            raise bad_response(provider, model, "a stream event is not a JSON object")
        yield item


def _candidate_text(candidate: dict[str, Any]) -> str:
    """The answer text: every part's text except thought summaries (what the SDK's ``.text`` does)."""
    parts = (candidate.get("content") or {}).get("parts") or []
    return "".join(str(p.get("text") or "") for p in parts if isinstance(p, dict) and not p.get("thought"))


def _blocked_categories(rated: dict[str, Any]) -> str:
    """The harm categories a candidate or prompt was blocked for, from its safetyRatings."""
    ratings = rated.get("safetyRatings")
    blocked = [str(r.get("category")) for r in ratings if isinstance(r, dict) and r.get("blocked")] if isinstance(
        ratings, list) else []
    return ", ".join(blocked)


def _usage(raw: Any) -> Usage:
    """Thinking tokens are billed as output, as OpenAI's and Anthropic's completion counts include them."""
    if not isinstance(raw, dict):
        return Usage()
    completion = token_count(raw.get("candidatesTokenCount"))
    if thoughts := token_count(raw.get("thoughtsTokenCount")):
        completion = (completion or 0) + thoughts
    return Usage(token_count(raw.get("promptTokenCount")), completion, token_count(raw.get("cachedContentTokenCount")))


def _model_name(model: dict[str, Any]) -> str:
    return str(model["name"]).removeprefix("models/")


def _generates_content(model: Any) -> bool:
    return isinstance(model, dict) and bool(model.get("name")) and (
        "generateContent" in (model.get("supportedGenerationMethods") or [])
    )
