"""/api: the seven model operations, health, failures and hosts. Thin: parse, one manager verb, map errors.

Model ids contain ':' and '/' (``llamacpp:org/model-GGUF:Q4_K_M``), so they are matched with the path
converter; ``%2F`` and ``%3A`` work as well as the plain characters.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError

from orchestrator_core.errors import ConfigurationError
from orchestrator_core.orchestrator import Orchestrator
from orchestrator_core.store import FailureEntry
from orchestrator_core.types import ModelStatus

from . import prom
from .auth import AdminToken, ChatToken, Credentials, admin_token
from .schemas import (
    Alternative,
    FailureList,
    FailureOut,
    Health,
    HostList,
    ModelList,
    ModelStatusOut,
    ResetAnswer,
    ResetBody,
    WaitBody,
    api_errors,
)

router = APIRouter(prefix="/api", tags=["management"])
metrics_router = APIRouter(tags=["metrics"])
MODEL = "/models/{model_id:path}"
AUTH = api_errors(401, 403, 429)
READ = {**AUTH, **api_errors(400, 404, 503)}


def _backend(request: Request) -> Any:
    return request.app.state.backend


def status_out(status: ModelStatus) -> ModelStatusOut:
    return ModelStatusOut(model_id=status.model_id, state=status.state.value, ready=status.state.ready,
                          detail=status.detail, local=status.local, checked_at=status.checked_at,
                          cooldown_until=status.cooldown_until)


def failure_out(entry: FailureEntry) -> FailureOut:
    return FailureOut(model_id=entry.model_id, error_type=entry.error_kind, message=entry.message, since=entry.since,
                      until=entry.until, failure_count=entry.failure_count, active=entry.active)




@router.get("/health", response_model=Health, responses={503: {"model": Health}})
async def health(request: Request) -> Response:
    """Database and local hosts reachable? No token needed; says nothing about who signed in or holds a key."""

    def check(orch: Orchestrator) -> Health:
        orch.check_database()
        hosts = [{"provider": h.provider, "reachable": h.reachable} for h in orch.hosts()]
        return Health.model_validate({"status": "ok", "database": "ok", "hosts": hosts})

    try:
        answer = await _backend(request).call(check)
    except (ConfigurationError, SQLAlchemyError):
        answer = Health(status="degraded", database="unreachable", hosts=[])
        return JSONResponse(answer.model_dump(), status_code=503)
    return JSONResponse(answer.model_dump())


@router.get("/models", response_model=ModelList, responses=READ)
async def list_models(request: Request, _: ChatToken, refresh: bool = False) -> ModelList:
    """Every active model with its status; refresh=true asks the hosts again instead of the short cache."""
    statuses = await _backend(request).call(lambda o: o.statuses(force=refresh))
    return ModelList(models=[status_out(s) for s in statuses])


@router.get(MODEL + "/status", response_model=ModelStatusOut, responses=READ)
async def model_status(request: Request, _: ChatToken, model_id: str, refresh: bool = False) -> ModelStatusOut:
    return status_out(await _backend(request).call(lambda o: o.model_status(model_id, force=refresh)))


@router.post(MODEL + "/load", response_model=ModelStatusOut, responses={**READ, **api_errors(409, 502, 504)})
async def load_model(request: Request, _: AdminToken, model_id: str) -> ModelStatusOut:
    """Start loading a local model; answers at once with state loading (or loaded). Follow with /wait."""
    return status_out(await _backend(request).call(lambda o: o.load(model_id)))


@router.post(MODEL + "/wait", response_model=ModelStatusOut, responses={**READ, **api_errors(409, 429, 502, 504)})
async def wait_for_model(request: Request, _: ChatToken, model_id: str,
                         body: WaitBody | None = None) -> ModelStatusOut:
    """Answer once the model is loaded; 504 when timeout_s passes first, 409 when the load failed."""
    timeout = body.timeout_s if body else None
    backend = _backend(request)
    with backend.wait_slot():
        return status_out(await backend.call(lambda o: o.wait_for_load(model_id, timeout_s=timeout)))


@router.post(MODEL + "/unload", response_model=ModelStatusOut, responses={**READ, **api_errors(502, 504)})
async def unload_model(request: Request, _: AdminToken, model_id: str) -> ModelStatusOut:
    return status_out(await _backend(request).call(lambda o: o.unload(model_id)))


@router.get(MODEL + "/alternative", response_model=Alternative, responses=READ)
async def alternative(request: Request, _: ChatToken, model_id: str) -> Alternative:
    """The model a call would fall back to from model_id, and the whole ranking."""
    ranked = await _backend(request).call(lambda o: o.alternatives(model_id))
    return Alternative(model_id=model_id, alternative=ranked[0] if ranked else None, ranked=ranked)


@router.post("/failures/reset", response_model=ResetAnswer, responses=READ)
async def reset_failures(request: Request, _: AdminToken, body: ResetBody | None = None) -> ResetAnswer:
    """Clear the failure cache for one model, or for all when the body is empty."""
    model_id = body.model_id if body else None
    return ResetAnswer(cleared=await _backend(request).call(lambda o: o.reset_cooldowns(model_id)))


@router.get("/failures", response_model=FailureList, responses=READ)
async def failures(request: Request, _: ChatToken) -> FailureList:
    entries = await _backend(request).call(lambda o: o.cooldowns())
    return FailureList(failures=[failure_out(e) for e in entries])


@router.get("/hosts", response_model=HostList, responses=READ)
async def hosts(request: Request, _: ChatToken, refresh: bool = False) -> HostList:
    return HostList(hosts=await _backend(request).call(lambda o: o.hosts(force=refresh)))


async def metrics_access(request: Request, credentials: Credentials) -> None:
    """An admin token, unless METRICS_PUBLIC opens /metrics to a scraper."""
    orch = await _backend(request).ready_orchestrator()
    if not orch.settings.metrics_public:
        await admin_token(request, credentials)


@metrics_router.get("/metrics", response_class=Response, responses={200: {"content": {prom.CONTENT_TYPE: {}}},
                                                                    **AUTH})
async def metrics(request: Request, _: Annotated[None, Depends(metrics_access)]) -> Response:
    """Prometheus text: calls, latency and time-to-first-token histograms, fallbacks, model states, cooldowns."""
    backend = _backend(request)
    body = await backend.call(lambda o: backend.metrics.render())
    return Response(body, media_type=prom.CONTENT_TYPE)
