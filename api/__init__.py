"""The HTTP API beside the console: management under /api, an OpenAI-compatible gateway under /v1, /metrics.

    api/app.py         create_api(): the FastAPI app, its routers, error handlers, lifespan and worker threads
    api/asgi.py        app (console + API on one port, what `make run` serves) and api_app (API only)
    api/errors.py      the one place an OrchestratorError becomes a status and a JSON body
    api/auth.py        gateway tokens on every route but /api/health; failed checks rate-limited
    api/management.py  /api: health, models, status, load, wait, unload, alternative, failures, hosts
    api/gateway.py     /v1: models, chat/completions (plain and streamed)
    api/lean.py        the lean path of POST /v1/chat/completions, in front of FastAPI's per-request layers
    api/streaming.py   the thread that runs a stream and the SSE events it becomes
    api/shapes.py      OpenAI's answer shapes (chat.completion, usage, finish reasons, headers)
    api/prom.py        /metrics in the Prometheus text format

Routes are thin like pages: parse, call one facade verb on a worker thread, map the error class.
"""
