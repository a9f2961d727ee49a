"""LM Studio: chat over its OpenAI-compatible /v1, model state and load/unload over its native REST API.

Three generations of LM Studio answer differently, so the API level is detected once and remembered:
  "v1"      0.4.0+   GET /api/v1/models (loaded_instances), POST /api/v1/models/load and /unload
  "v0"      0.3.6+   GET /api/v0/models (state loaded / not-loaded); no load or unload endpoints
  "openai"  older    GET /v1/models only: the load state cannot be seen
Hosts older than 0.4 load a model "just in time" when a chat request names it, if JIT is enabled.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from ..errors import (
    AuthenticationError,
    ModelLoadError,
    ModelNotFoundError,
    ModelNotLoadedError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    RateLimitError,
    UnsupportedOperationError,
    bad_response,
    classify_response,
    error_text,
    host_message,
)
from ..types import ChatParams, HostModel, Message, ModelFacts, ModelState
from .base import LocalHost
from .openai_compat import OpenAICompatibleProvider

if TYPE_CHECKING:
    import httpx

    from .base import Client

ApiLevel = Literal["v1", "v0", "openai"]
T = TypeVar("T")

DEFAULT_LOAD_TIMEOUT_S = 300.0
UNKNOWN_STATE = "old LM Studio: load state unknown"
# LM Studio answers an unknown route with HTTP 200 and this error text ("Returning 200 anyway").
_UNKNOWN_ROUTE = "unexpected endpoint or method"
# Errors of a load call that mean something other than "the host could not load it".
_PASS_THROUGH = (AuthenticationError, ModelNotFoundError, ProviderTimeoutError, RateLimitError)
JIT_STATE = "loaded just in time (this LM Studio cannot report load state; may be stale)"


@dataclass
class _Learned:
    """What this connection's host has shown about itself, kept on its long-lived provider object."""

    api_level: ApiLevel | None = None  # detected once, then one request per status check
    # Models this process loaded just in time on a host that cannot report load state (before 0.3.6):
    # the best knowledge there is, so a finished load is not reported as "not loaded" forever.
    jit_loaded: set[str] = field(default_factory=set)


class LMStudioProvider(OpenAICompatibleProvider, LocalHost):
    """LM Studio's local server; base_url is the host root (http://127.0.0.1:1234)."""

    kind = name = "lmstudio"
    display_name = "LM Studio"
    default_base_url = "http://127.0.0.1:1234"
    base_url_env_vars = ("LMSTUDIO_BASE_URL",)
    key_env_vars = ("LM_API_TOKEN",)  # only when "Require Authentication" is on (0.4.0+)
    needs_key = False
    local = True
    start_hint = "start LM Studio and its local server (Developer tab, or `lms server start`)"
    chat_path = "/v1/chat/completions"
    models_path = "/v1/models"

    def __init__(self, client: Client, api_key: str | None = None, **options: Any) -> None:
        super().__init__(client, api_key, **options)
        self.learned = _Learned()  # shared by the with_key / with_client views of this connection's provider

    @property
    def api_level(self) -> ApiLevel | None:
        """The native API this host answered on ("v1", "v0", "openai"); None until first asked."""
        return self.learned.api_level

    def _remember(self, level: ApiLevel | None) -> None:
        self.learned.api_level = level

    # -- state ----------------------------------------------------------------------------------
    def host_models(self) -> list[HostModel]:
        """Every LLM on the host with its state: one request once the API level is known."""
        level = self.api_level
        if level in (None, "v1"):
            data = self._get_native("/api/v1/models")
            if data is not None:
                self._remember("v1")
                return _models_v1(data)
        if level in (None, "v1", "v0"):
            data = self._get_native("/api/v0/models")
            if data is not None:
                self._remember("v0")
                return _models_v0(data)
        models = self._transport_guard(self.list_models)
        self._remember("openai")
        jit = self.learned.jit_loaded
        return [
            HostModel(name, ModelState.LOADED, detail=JIT_STATE) if name in jit
            else HostModel(name, ModelState.NOT_LOADED, detail=UNKNOWN_STATE)
            for name in models
        ]

    # -- load / unload ----------------------------------------------------------------------------
    def load_model(self, model: str) -> None:
        """Load a model and return once it is in memory (blocks for the whole load)."""
        listed = self.host_models()
        if any(m.state is ModelState.LOADED and self._matches(model, m) for m in listed):
            return  # a second load would stack a ":2" instance of the same model
        if self.api_level == "v1" and self._load_v1(model):
            return
        self._load_just_in_time(model)

    def unload_model(self, model: str) -> None:
        """Unload every instance of a model (or the one instance named); a no-op if it is not loaded."""
        listed = self.host_models()
        if self.api_level != "v1":
            raise UnsupportedOperationError(
                f"LM Studio at {self.base_url} is older than 0.4, which has no unload API; run "
                f"'lms unload {model}' or eject the model in the LM Studio app (or upgrade to 0.4+).",
                provider=self.name,
                model=model,
            )
        for instance_id in self._instances_of(model, listed):
            self.request_json(
                "POST", "/api/v1/models/unload", model=model, headers=self.headers(),
                json={"instance_id": instance_id},
            )

    def _load_v1(self, model: str) -> bool:
        """POST /api/v1/models/load; False when this host turns out not to have the route."""
        response = self._send("POST", "/api/v1/models/load", model=model, json={"model": model},
                              timeout=self._load_timeout())
        body = _json_or_none(response)
        if _is_unknown_route(body):
            self._remember(None)
            return False
        if response.status_code >= 400:
            error = classify_response(response, provider=self.name, model=model, secrets=self.secrets)
            if isinstance(error, _PASS_THROUGH):
                raise error
            raise self._load_refused(model, response, body, error.status_code)
        if not _load_succeeded(body):
            raise self._load_refused(model, response, body, response.status_code)
        return True

    def _load_just_in_time(self, model: str) -> None:
        """Hosts before 0.4 have no load endpoint: a one-token chat makes LM Studio load the model."""
        ping: list[Message] = [{"role": "user", "content": "ping"}]
        response = self._send(
            "POST", self.chat_path, model=model, timeout=self._load_timeout(),
            json=self.body(model, ping, ChatParams(max_tokens=1), stream=False),
        )
        body = _json_or_none(response)
        if response.status_code >= 400:
            error = classify_response(response, provider=self.name, model=model, secrets=self.secrets)
            if not isinstance(error, ModelNotLoadedError):
                raise error
            raise self._jit_refused(model, self._host_message(response, body), error.status_code)
        if isinstance(body, dict) and body.get("error"):
            raise self._jit_refused(model, self._host_message(response, body), response.status_code)
        self.learned.jit_loaded.add(model)

    # -- helpers --------------------------------------------------------------------------------
    def _get_native(self, path: str) -> Any | None:
        """GET a native /api route; None when this LM Studio is too old to have it."""
        try:
            data = self._transport_guard(lambda: self.request_json("GET", path, headers=self.headers()))
        except ModelNotFoundError as exc:
            if exc.status_code == 404:
                return None
            raise
        if _is_unknown_route(data):
            return None
        self.raise_for_error_payload(data, "")
        return data

    def _send(self, method: str, path: str, *, model: str, **kwargs: Any) -> httpx.Response:
        """One load request, read whole within LOAD_TIMEOUT_S, for error bodies that need a closer look."""
        total = float(self.options.get("load_timeout_s", DEFAULT_LOAD_TIMEOUT_S))
        return self._transport_guard(lambda: self.send_read(
            method, path, model=model, total_s=total, setting="LOAD_TIMEOUT_S", headers=self.headers(), **kwargs
        ))

    def _transport_guard(self, call: Callable[[], T]) -> T:
        """Run a call; when the host cannot be reached, forget the API level (it may come back upgraded)."""
        try:
            return call()
        except (ProviderUnavailableError, ProviderTimeoutError) as exc:
            if exc.status_code is None:
                self._remember(None)
            raise

    def _load_timeout(self) -> httpx.Timeout:
        """The client's timeouts, with a read timeout long enough for a model to load."""
        import httpx  # noqa: PLC0415 - start-up cost: the read-only status never imports httpx

        base = self.http.timeout
        read = float(self.options.get("load_timeout_s", DEFAULT_LOAD_TIMEOUT_S))
        return httpx.Timeout(connect=base.connect, read=read, write=base.write, pool=base.pool)

    def _matches(self, requested: str, listed: HostModel) -> bool:
        return self.same_model(requested, listed.name) or requested in listed.instance_ids

    def _instances_of(self, model: str, listed: list[HostModel]) -> list[str]:
        """The instance ids to unload: the one named, or every instance of the model key."""
        if any(model in m.instance_ids and model != m.name for m in listed):
            return [model]
        return [i for m in listed if self.same_model(model, m.name) for i in m.instance_ids]

    def _host_message(self, response: httpx.Response, body: Any) -> str:
        return host_message(body, response.text, self.secrets)

    def _load_refused(self, model: str, response: httpx.Response, body: Any, status: int | None) -> ModelLoadError:
        message = self._host_message(response, body)
        return ModelLoadError(
            f"LM Studio could not load {model} ({message}); check that it is downloaded and fits in memory, "
            f"or load it in the LM Studio app or with 'lms load {model}'.",
            provider=self.name,
            model=model,
            status_code=status,
        )

    def _jit_refused(self, model: str, message: str, status: int | None) -> ModelLoadError:
        return ModelLoadError(
            f"LM Studio did not load {model} on request ({message}); just-in-time loading is probably off. "
            "Enable 'Just in Time Model Loading' in LM Studio's server settings, upgrade to LM Studio 0.4+ "
            f"(which has a load API), or run 'lms load {model}'.",
            provider=self.name,
            model=model,
            status_code=status,
        )


def _models_v1(data: Any) -> list[HostModel]:
    items = data.get("models") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise bad_response(LMStudioProvider.name, None, "GET /api/v1/models has no 'models' array")
    result = []
    for item in items:
        if not isinstance(item, dict) or _is_embedding(item) or not (item.get("key") or item.get("id")):
            continue
        instances = tuple(
            str(i["id"]) for i in item.get("loaded_instances") or [] if isinstance(i, dict) and i.get("id")
        )
        state = ModelState.LOADED if instances else ModelState.NOT_LOADED
        # JIT and `lms load` can stack ":2" instances of one model; say so, each one costs memory.
        detail = f"{len(instances)} instances loaded: {', '.join(instances)}" if len(instances) > 1 else ""
        result.append(HostModel(str(item.get("key") or item["id"]), state, instances, detail, facts=_facts_v1(item)))
    return result


def _facts_v1(item: dict[str, Any]) -> ModelFacts:
    """Size and context from 0.4's list; the loaded context is the first instance's config (no memory figure)."""
    loaded = [i.get("config") for i in item.get("loaded_instances") or [] if isinstance(i, dict)]
    config = loaded[0] if loaded and isinstance(loaded[0], dict) else {}
    return ModelFacts(size_bytes=_int(item.get("size_bytes")), context_length=_int(config.get("context_length")),
                      max_context_length=_int(item.get("max_context_length")))


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _models_v0(data: Any) -> list[HostModel]:
    items = data.get("data") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise bad_response(LMStudioProvider.name, None, "GET /api/v0/models has no 'data' array")
    result = []
    for item in items:
        if not isinstance(item, dict) or _is_embedding(item) or not item.get("id"):
            continue
        name = str(item["id"])
        facts = ModelFacts(context_length=_int(item.get("loaded_context_length")),
                           max_context_length=_int(item.get("max_context_length")))
        if item.get("state") == "loaded":
            result.append(HostModel(name, ModelState.LOADED, (name,), facts=facts))
        else:
            result.append(HostModel(name, ModelState.NOT_LOADED, facts=facts))
    return result


def _is_embedding(item: dict[str, Any]) -> bool:
    # v1 says "embedding", v0 says "embeddings"; neither can chat.
    return str(item.get("type") or "").startswith("embedding")


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return json.loads(response.read() or b"null")
    except (ValueError, UnicodeDecodeError):
        return None


def _is_unknown_route(body: Any) -> bool:
    if isinstance(body, dict) and body.get("error"):
        return _UNKNOWN_ROUTE in error_text(body, "")[0].lower()
    return False


def _load_succeeded(body: Any) -> bool:
    if not isinstance(body, dict) or body.get("error"):
        return False
    status = body.get("status")
    # The 0.4.0 docs show status "loaded"; accept a body that names the new instance and no status.
    return status == "loaded" or (status is None and bool(body.get("instance_id")))

