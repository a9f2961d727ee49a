"""llama-server: router mode (GET /models status, /models/load, /models/unload) and single-model mode."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import respx

from orchestrator_core.errors import ModelNotFoundError, UnsupportedOperationError
from orchestrator_core.providers.llamacpp import LlamaCppProvider
from orchestrator_core.types import ModelState

BASE = "http://127.0.0.1:8080"
Wire = respx.MockRouter
ARGS = ["llama-server", "-ctx", "4096"]


@pytest.fixture
def wire() -> Iterator[Wire]:
    with respx.mock(base_url=BASE, assert_all_called=False) as router:
        yield router


@pytest.fixture
def llama() -> Iterator[LlamaCppProvider]:
    with httpx.Client(base_url=BASE, timeout=httpx.Timeout(5.0, connect=1.0)) as client:
        yield LlamaCppProvider(client)


def _router(wire: Wire, *statuses: dict[str, Any], bare: bool = False) -> respx.Route:
    items = [{"id": f"model-{i}", "object": "model", "status": s} for i, s in enumerate(statuses)]
    return wire.get("/models").respond(json=items if bare else {"data": items, "object": "list"})


def _body(route: respx.Route) -> Any:
    return json.loads(route.calls.last.request.content)


@pytest.mark.parametrize(
    ("status", "state", "detail", "progress"),
    [
        ({"value": "loaded", "args": ARGS}, ModelState.LOADED, "", None),
        ({"value": "loading", "args": ARGS}, ModelState.LOADING, "loading", None),
        ({"value": "loading", "progress": {"stages": ["text_model", "mmproj_model"], "current": "mmproj_model",
                                           "value": 0.5}},
         ModelState.LOADING, "loading 75%", 75.0),
        ({"value": "sleeping", "args": ARGS}, ModelState.SLEEPING, "sleeping: the first request wakes it", None),
        ({"value": "unloaded"}, ModelState.NOT_LOADED, "", None),
        ({"value": "unloaded", "args": ARGS, "failed": True, "exit_code": 1},
         ModelState.LOAD_FAILED, "load failed (exit code 1); see the llama-server log for why", None),
        ({"value": "downloading", "progress": {"https://hf.co/a.gguf": {"done": 50, "total": 200},
                                               "https://hf.co/b.gguf": {"done": 50, "total": 0}}},
         ModelState.DOWNLOADING, "downloading 50%", 50.0),
        ({"value": "downloading"}, ModelState.DOWNLOADING, "downloading", None),
    ],
    ids=["loaded", "loading", "loading-progress", "sleeping", "unloaded", "failed", "downloading",
         "downloading-no-progress"],
)
def test_llamacpp_router_status_maps_to_model_state(
    wire: Wire, llama: LlamaCppProvider, status: dict[str, Any], state: ModelState, detail: str,
    progress: float | None,
) -> None:
    _router(wire, status)

    [model] = llama.host_models()

    assert (model.name, model.state, model.detail, model.progress) == ("model-0", state, detail, progress)
    assert llama.mode == "router"
    assert len(wire.calls) == 1


def test_llamacpp_router_accepts_a_bare_list(wire: Wire, llama: LlamaCppProvider) -> None:
    _router(wire, {"value": "loaded"}, {"value": "unloaded"}, bare=True)

    models = llama.host_models()

    assert [(m.name, m.state) for m in models] == [
        ("model-0", ModelState.LOADED), ("model-1", ModelState.NOT_LOADED)
    ]


def test_llamacpp_load_posts_the_model_and_returns_at_once(wire: Wire, llama: LlamaCppProvider) -> None:
    _router(wire, {"value": "unloaded"})
    load = wire.post("/models/load").respond(json={"success": True})

    llama.load_model("ggml-org/gemma-3-4b-it-GGUF:Q4_K_M")

    assert _body(load) == {"model": "ggml-org/gemma-3-4b-it-GGUF:Q4_K_M"}


@pytest.mark.parametrize("message", ["model is already running", "model is already loaded"])
def test_llamacpp_load_of_a_running_model_is_a_success(wire: Wire, llama: LlamaCppProvider, message: str) -> None:
    _router(wire, {"value": "loaded"})
    load = wire.post("/models/load").respond(
        400, json={"error": {"code": 400, "message": message, "type": "invalid_request_error"}}
    )

    llama.load_model("model-0")

    assert load.call_count == 1


def test_llamacpp_load_of_an_unknown_model_is_model_not_found(wire: Wire, llama: LlamaCppProvider) -> None:
    _router(wire, {"value": "loaded"})
    wire.post("/models/load").respond(
        404, json={"error": {"code": 404, "message": "model is not found", "type": "not_found_error"}}
    )

    with pytest.raises(ModelNotFoundError, match="model is not found"):
        llama.load_model("nope")


def test_llamacpp_unload_posts_the_model(wire: Wire, llama: LlamaCppProvider) -> None:
    _router(wire, {"value": "loaded"})
    unload = wire.post("/models/unload").respond(json={"success": True})

    llama.unload_model("model-0")

    assert _body(unload) == {"model": "model-0"}


def test_llamacpp_unload_of_a_model_not_running_is_a_no_op(wire: Wire, llama: LlamaCppProvider) -> None:
    _router(wire, {"value": "unloaded"})
    unload = wire.post("/models/unload").respond(
        400, json={"error": {"code": 400, "message": "model is not running", "type": "invalid_request_error"}}
    )

    llama.unload_model("model-0")

    assert unload.call_count == 1


@pytest.mark.parametrize(("health_status", "state"), [(200, ModelState.LOADED), (503, ModelState.LOADING)])
def test_llamacpp_single_mode_reads_state_from_health(
    wire: Wire, llama: LlamaCppProvider, health_status: int, state: ModelState
) -> None:
    wire.get("/models").respond(404, json={"error": {"code": 404, "message": "File Not Found"}})
    wire.get("/v1/models").respond(
        json={"object": "list", "data": [{"id": "qwen2.5-7b-instruct-q4_k_m.gguf", "owned_by": "llamacpp"}]}
    )
    health_body = {"status": "ok"} if health_status == 200 else {
        "error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}
    }
    health = wire.get("/health").respond(health_status, json=health_body)

    [model] = llama.host_models()

    assert (model.name, model.state) == ("qwen2.5-7b-instruct-q4_k_m.gguf", state)
    assert health.call_count == 1
    assert llama.mode == "single"


def test_llamacpp_single_mode_is_recognised_from_a_model_list_without_status(
    wire: Wire, llama: LlamaCppProvider
) -> None:
    # Current servers answer GET /models in single mode too, with the plain OpenAI list.
    wire.get("/models").respond(json={"object": "list", "data": [{"id": "gemma.gguf", "meta": {"n_ctx_train": 8192}}]})
    v1 = wire.get("/v1/models").respond(json={"data": []})
    wire.get("/health").respond(json={"status": "ok"})

    [model] = llama.host_models()

    assert (model.name, model.state) == ("gemma.gguf", ModelState.LOADED)
    assert llama.mode == "single"
    assert v1.call_count == 0


def test_llamacpp_single_mode_while_loading_keeps_the_last_known_name(wire: Wire, llama: LlamaCppProvider) -> None:
    loading = {"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}}
    wire.get("/models").mock(side_effect=[httpx.Response(200, json={"data": [{"id": "gemma.gguf"}]}),
                                          httpx.Response(503, json=loading)])
    wire.get("/v1/models").respond(503, json=loading)
    wire.get("/health").mock(side_effect=[httpx.Response(200, json={"status": "ok"}),
                                          httpx.Response(503, json=loading)])

    llama.host_models()
    [model] = llama.with_key(None).host_models()  # a per-request view of the connection's provider

    assert (model.name, model.state) == ("gemma.gguf", ModelState.LOADING)


@pytest.mark.parametrize("action", ["load_model", "unload_model"])
def test_llamacpp_single_mode_cannot_load_or_unload(wire: Wire, llama: LlamaCppProvider, action: str) -> None:
    wire.get("/models").respond(json={"data": [{"id": "gemma.gguf"}]})
    wire.get("/health").respond(json={"status": "ok"})
    posted = wire.post(path__startswith="/models/").respond(json={"success": True})

    with pytest.raises(UnsupportedOperationError, match="without -m"):
        getattr(llama, action)("gemma.gguf")

    assert posted.call_count == 0
