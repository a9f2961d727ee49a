"""llama.cpp llama-server: chat over its OpenAI-compatible /v1; model state in two modes.

Router mode (started without -m) runs each model in a child process and manages them over HTTP:
GET /models carries a ``status`` per model, POST /models/load and /models/unload act on one
(both answer at once; the change shows in GET /models and is pushed on GET /models/sse).
Single-model mode (started with -m) serves one fixed model: /health says whether it is ready,
and nothing can be loaded or unloaded over HTTP. GET /models answers in both modes (in single
mode without ``status``; very old servers lack the route), so the mode is told from its shape.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from ..errors import (
    BadRequestError,
    ModelLoadError,
    ModelNotFoundError,
    ModelNotLoadedError,
    ProviderUnavailableError,
    UnsupportedOperationError,
    bad_response,
)
from ..types import HostModel, ModelState
from .base import LocalHost, event_json
from .openai_compat import OpenAICompatibleProvider

if TYPE_CHECKING:
    from .base import Client

Mode = Literal["router", "single"]

_ALREADY_RUNNING = ("already running", "already loaded")  # "loaded" in servers before the rename
_NOT_RUNNING = ("not running", "not loaded")


@dataclass
class _Learned:
    """What this connection's server has shown about itself, kept on its long-lived provider object."""

    mode: Mode | None = None
    # What a single-model server served: while the model reloads every route but /health answers 503, and
    # the name must still show.
    single_names: list[str] = field(default_factory=list)


class LlamaCppProvider(OpenAICompatibleProvider, LocalHost):
    """A llama-server; base_url is the host root (http://127.0.0.1:8080). A key only with --api-key."""

    kind = name = "llamacpp"
    display_name = "llama.cpp (llama-server)"
    default_base_url = "http://127.0.0.1:8080"
    base_url_env_vars = ("LLAMACPP_BASE_URL",)
    needs_key = False
    local = True
    start_hint = "start llama-server (`llama-server -m MODEL.gguf --port PORT`, or `--models-dir DIR` for the router)"
    chat_path = "/v1/chat/completions"
    models_path = "/v1/models"
    pushes_model_events = True

    def __init__(self, client: Client, api_key: str | None = None, **options: Any) -> None:
        super().__init__(client, api_key, **options)
        self.learned = _Learned()  # shared by the with_key / with_client views of this connection's provider

    @property
    def mode(self) -> Mode | None:
        """The mode host_models last saw ("router" or "single"); None before the first look."""
        return self.learned.mode

    # -- state ----------------------------------------------------------------------------------
    def host_models(self) -> list[HostModel]:
        """Every model with its state: one request in router mode, two or three in single mode."""
        items = self._items_or_none("/models")
        if items is not None and (not items or any(isinstance(i.get("status"), dict) for i in items)):
            self.learned.mode = "router"
            return [_router_model(i) for i in items if i.get("id")]
        self.learned.mode = "single"
        return self._single_models(items)

    def _single_models(self, items: list[dict[str, Any]] | None) -> list[HostModel]:
        ready = self._healthy()
        if items is None:
            items = self._items_or_none(self.models_path)
        if items is not None:
            self.learned.single_names = [str(i["id"]) for i in items if i.get("id")]
        names = self.learned.single_names
        if ready:
            return [HostModel(n, ModelState.LOADED, detail="single-model mode") for n in names]
        return [HostModel(n, ModelState.LOADING, detail="loading (GET /health answers 503)") for n in names]

    def model_events(self) -> Iterator[HostModel]:
        """Model state changes as the router pushes them on GET /models/sse (with load progress)."""
        for event in self.stream_events("GET", "/models/sse", headers=self.headers()):
            update = _event_model(event_json(event, provider=self.name, model=None), event.event)
            if update is not None:
                yield update

    # -- load / unload ----------------------------------------------------------------------------
    def load_model(self, model: str) -> None:
        """Ask the router to start a model; returns at once, poll host_models() until it is LOADED."""
        self._require_router(model, "load")
        try:
            data = self.request_json("POST", "/models/load", model=model, headers=self.headers(), json={"model": model})
        except BadRequestError as exc:
            if _says(exc.message, _ALREADY_RUNNING):
                return
            raise
        if isinstance(data, dict) and data.get("success") is False:
            raise ModelLoadError(
                f"llama-server refused to load {model} ({data}); check the router's log.",
                provider=self.name,
                model=model,
            )

    def unload_model(self, model: str) -> None:
        """Ask the router to stop a model; a no-op when it is not running.

        The router answers before the child has exited: the model stays "loaded" for tens of ms
        (up to the child's stop timeout), so callers watch the state to see it go.
        """
        self._require_router(model, "unload")
        try:
            self.request_json("POST", "/models/unload", model=model, headers=self.headers(), json={"model": model})
        except (BadRequestError, ModelNotLoadedError) as exc:  # "model is not loaded" reads as not-loaded
            if not _says(exc.message, _NOT_RUNNING):
                raise

    # -- helpers --------------------------------------------------------------------------------
    def _require_router(self, model: str, action: str) -> None:
        if self.learned.mode is None:
            self.host_models()
        if self.learned.mode == "single":
            raise UnsupportedOperationError(
                f"llama-server at {self.base_url} runs in single-model mode (started with -m), which "
                f"cannot {action} models over HTTP; restart llama-server without -m (with --models-dir "
                "or its model cache) to use router mode, or restart it with the model you want.",
                provider=self.name,
                model=model,
            )

    def _items_or_none(self, path: str) -> list[dict[str, Any]] | None:
        """The model list at path (``{"data": [...]}`` or a bare list); None on 404, or 503 while loading."""
        try:
            data = self.request_json("GET", path, headers=self.headers())
        except (ModelNotFoundError, ProviderUnavailableError) as exc:
            if exc.status_code in (404, 503):
                return None
            raise
        items = data.get("data") if isinstance(data, dict) else data
        if not isinstance(items, list):
            raise bad_response(self.name, None, f"GET {path} has no 'data' array")
        return [i for i in items if isinstance(i, dict)]

    def _healthy(self) -> bool:
        """GET /health: True when ready, False while the model loads (503)."""
        try:
            self.request_json("GET", "/health", headers=self.headers())
        except ProviderUnavailableError as exc:
            if exc.status_code == 503:
                return False
            raise
        return True


def _router_model(item: dict[str, Any]) -> HostModel:
    raw_status = item.get("status")
    status: dict[str, Any] = raw_status if isinstance(raw_status, dict) else {}
    if status.get("value") == "downloading" and "progress" not in status:
        status = {**status, "progress": item.get("progress")}  # some builds put it beside the status
    return _host_model(str(item["id"]), status)


def _host_model(name: str, status: dict[str, Any]) -> HostModel:
    """One router status (``{"value": ..., "failed": ..., "exit_code": ..., "progress": ...}``) as a HostModel."""
    value = str(status.get("value") or "")
    if value == "loaded":
        return HostModel(name, ModelState.LOADED)
    if value == "sleeping":
        return HostModel(name, ModelState.SLEEPING, detail="sleeping: the first request wakes it")
    if value == "loading":
        percent = _load_percent(status.get("progress"))
        return HostModel(name, ModelState.LOADING, detail=_with_percent("loading", percent), progress=percent)
    if value == "downloading":
        percent = _download_percent(status.get("progress"))
        return HostModel(name, ModelState.DOWNLOADING, detail=_with_percent("downloading", percent), progress=percent)
    if status.get("failed"):
        return HostModel(name, ModelState.LOAD_FAILED, detail=_failure_detail(status))
    detail = "" if value == "unloaded" else f"unknown status {value!r}"
    return HostModel(name, ModelState.NOT_LOADED, detail=detail)


def _event_model(payload: Any, event_name: str) -> HostModel | None:
    """A /models/sse frame as the HostModel it reports, or None when it is about no model's state.

    Frames are ``data: {"model": m, "event": e, "data": {...}}``: ``model_status`` when a load starts,
    ``status_change`` on every change (``exit_code`` once unloaded, non-zero for a failed load; load
    ``progress``), ``download_progress`` while the router fetches the files.
    """
    if not isinstance(payload, dict) or not isinstance(payload.get("model"), str) or payload["model"] == "*":
        return None
    kind = str(payload.get("event") or event_name)
    raw_data = payload.get("data")
    data: dict[str, Any] = raw_data if isinstance(raw_data, dict) else {}
    if kind == "download_progress":
        return _host_model(payload["model"], {"value": "downloading", "progress": data.get("progress")})
    if kind not in ("model_status", "status_change"):
        return None
    raw = data.get("status")
    status: dict[str, Any] = dict(raw) if isinstance(raw, dict) else {"value": raw, "progress": data.get("progress")}
    code = data.get("exit_code", status.get("exit_code"))
    if status.get("value") == "unloaded" and isinstance(code, int) and code != 0:
        status.update(failed=True, exit_code=code)
    return _host_model(payload["model"], status)


def _load_percent(progress: Any) -> float | None:
    """Percent of a load: ``{"stages": ["text_model", ...], "current": "text_model", "value": 0.4}``.

    Each stage (the model, a draft model, a projector) reports 0..1 in turn, so the overall share
    is (stages done + value of the current one) / number of stages.
    """
    if not isinstance(progress, dict) or not isinstance(progress.get("value"), (int, float)):
        return None
    stages, current = progress.get("stages"), progress.get("current")
    if isinstance(stages, list):
        count, index = len(stages), stages.index(current) if current in stages else 0
    else:
        count = stages if isinstance(stages, int) else 1
        index = current if isinstance(current, int) else 0
    count = max(count, index + 1)
    share = (index + min(max(float(progress["value"]), 0.0), 1.0)) / count
    return round(100 * share, 1)


def _download_percent(progress: Any) -> float | None:
    """Percent over every file being downloaded (progress maps each URL to done/total bytes)."""
    files = [p for p in progress.values() if isinstance(p, dict)] if isinstance(progress, dict) else []
    done = sum(p.get("done") or 0 for p in files)
    total = sum(p.get("total") or 0 for p in files)
    return round(100 * done / total, 1) if total else None


def _with_percent(word: str, percent: float | None) -> str:
    return word if percent is None else f"{word} {percent:.0f}%"


def _failure_detail(status: dict[str, Any]) -> str:
    detail = f"load failed (exit code {status.get('exit_code')})"
    if status.get("last_error"):
        detail += f": {status['last_error']}"
    return detail + "; see the llama-server log for why"


def _says(message: str, markers: tuple[str, ...]) -> bool:
    lowered = message.lower()
    return any(m in lowered for m in markers)
