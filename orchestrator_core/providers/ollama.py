"""Ollama: chat over its OpenAI-compatible /v1, model state and load/unload over its native /api."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from ..errors import (
    AuthenticationError,
    ModelLoadError,
    ModelNotFoundError,
    ProviderTimeoutError,
    RateLimitError,
    bad_response,
    classify_response,
    host_message,
)
from ..types import HostModel, ModelFacts, ModelState
from .base import LocalHost
from .openai_compat import OpenAICompatibleProvider

if TYPE_CHECKING:
    import httpx

DEFAULT_LOAD_TIMEOUT_S = 300.0
# Errors of a load call that mean something other than "the host could not load it".
_PASS_THROUGH = (AuthenticationError, ModelNotFoundError, ProviderTimeoutError, RateLimitError)


class OllamaProvider(OpenAICompatibleProvider, LocalHost):
    """An Ollama server; base_url is the host root (http://127.0.0.1:11434). It needs no key."""

    kind = name = "ollama"
    display_name = "Ollama"
    default_base_url = "http://127.0.0.1:11434"
    base_url_env_vars = ("OLLAMA_BASE_URL",)
    needs_key = False
    local = True
    start_hint = "start Ollama (`ollama serve`, or the desktop app)"
    chat_path = "/v1/chat/completions"
    models_path = "/v1/models"

    def host_models(self) -> list[HostModel]:
        """Downloaded models with their state, from two requests.

        Ollama has no single endpoint for both facts: /api/tags lists what is downloaded (never
        whether it is in memory) and /api/ps lists what is in memory (never what is not).
        """
        downloaded = self._models_at("/api/tags")
        loaded = {_name(m): m for m in self._models_at("/api/ps")}
        result = []
        for item in downloaded:
            name = _name(item)
            running = next((m for key, m in loaded.items() if self.same_model(name, key)), None)
            if running is None:
                result.append(HostModel(name, ModelState.NOT_LOADED, facts=_facts(item, None)))
            else:
                result.append(HostModel(name, ModelState.LOADED, (_name(running),), _memory_detail(running),
                                        facts=_facts(item, running)))
        known = {m.name for m in result}
        # A model can run without being listed by /api/tags (e.g. a cloud model): still show it.
        for key, item in loaded.items():
            if not any(self.same_model(key, name) for name in known):
                result.append(HostModel(key, ModelState.LOADED, (key,), _memory_detail(item), facts=_facts(item, item)))
        return result

    @classmethod
    def same_model(cls, requested: str, listed: str) -> bool:
        """Ollama adds the tag ":latest" to untagged names, so "llama3.2" is "llama3.2:latest"."""
        return _canonical(requested) == _canonical(listed)

    def load_model(self, model: str) -> None:
        """Load a model into memory; blocks until Ollama has loaded it."""
        body: dict[str, Any] = {"model": model, "stream": False}
        if self.options.get("keep_alive") is not None:
            body["keep_alive"] = self.options["keep_alive"]  # e.g. "24h", or -1 to keep it until unloaded
        response = self._generate(model, body)
        data = _json_or_none(response)
        if response.status_code >= 400:
            error = classify_response(response, provider=self.name, model=model)
            if isinstance(error, _PASS_THROUGH):
                raise error
            raise self._load_failed(model, host_message(data, response.text, self.secrets), response.status_code)
        if not isinstance(data, dict) or data.get("error"):
            # Ollama reports a failure after the 200 status line as a body {"error": "..."}.
            raise self._load_failed(model, host_message(data, response.text, self.secrets), response.status_code)

    def unload_model(self, model: str) -> None:
        """Unload a model now; Ollama answers the same way when it was not loaded."""
        response = self._generate(model, {"model": model, "keep_alive": 0, "stream": False})
        if response.status_code >= 400:
            raise classify_response(response, provider=self.name, model=model)

    # -- helpers --------------------------------------------------------------------------------
    def _models_at(self, path: str) -> list[dict[str, Any]]:
        data = self.request_json("GET", path, headers=self.headers())
        items = data.get("models") if isinstance(data, dict) else None
        if not isinstance(items, list):
            raise bad_response(self.name, None, f"GET {path} has no 'models' array")
        return [m for m in items if isinstance(m, dict) and _name(m)]

    def _generate(self, model: str, body: dict[str, Any]) -> httpx.Response:
        """An empty /api/generate request: Ollama loads (or, with keep_alive 0, unloads) and answers."""
        total = float(self.options.get("load_timeout_s", DEFAULT_LOAD_TIMEOUT_S))
        return self.send_read(
            "POST", "/api/generate", model=model, total_s=total, setting="LOAD_TIMEOUT_S", headers=self.headers(),
            json=body, timeout=self._load_timeout(),
        )

    def _load_timeout(self) -> httpx.Timeout:
        """The client's timeouts, with a read timeout long enough for a model to load."""
        import httpx  # noqa: PLC0415 - start-up cost: the read-only status never imports httpx

        base = self.http.timeout
        read = float(self.options.get("load_timeout_s", DEFAULT_LOAD_TIMEOUT_S))
        return httpx.Timeout(connect=base.connect, read=read, write=base.write, pool=base.pool)

    def _load_failed(self, model: str, message: str, status: int) -> ModelLoadError:
        return ModelLoadError(
            f"Ollama could not load {model} ({message}); check the server log ('ollama serve'), free "
            "memory by unloading other models ('ollama stop <model>'), or pick a smaller model.",
            provider=self.name,
            model=model,
            status_code=status,
        )


def _name(item: dict[str, Any]) -> str:
    return str(item.get("name") or item.get("model") or "")


def _canonical(name: str) -> str:
    """Lower-case with an explicit tag; a registry port ("host:5000/m") is not a tag."""
    name = name.strip().lower()
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def _facts(downloaded: dict[str, Any], running: dict[str, Any] | None) -> ModelFacts:
    """Size from /api/tags; the context and memory (size in RAM/VRAM) of the running copy from /api/ps."""
    def number(item: dict[str, Any] | None, key: str) -> int | None:
        value = item.get(key) if item else None
        return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None

    return ModelFacts(size_bytes=number(downloaded, "size"), context_length=number(running, "context_length"),
                      memory_bytes=number(running, "size"))


def _memory_detail(item: dict[str, Any]) -> str:
    size, vram = item.get("size"), item.get("size_vram")
    if isinstance(size, int) and isinstance(vram, int) and size > 0 and vram < size:
        # Ollama splits a model that does not fit in VRAM; the CPU part makes it much slower.
        return f"partly on CPU ({round(100 * (size - vram) / size)}% CPU / {round(100 * vram / size)}% GPU)"
    return ""


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return json.loads(response.read() or b"null")
    except (ValueError, UnicodeDecodeError):
        return None
