"""Command line: ``python -m orchestrator_core status|load|unload|chat|keys|tokens ...`` (``--json`` for scripts).

Start-up is part of every command's cost, so modules load when a command needs them: parsing the
arguments imports nothing of the core, and only chat or load ever import the metrics module. ``status``
on a SQLite file at the newest revision reads through the standard library (store/readonly.py) and
imports neither SQLAlchemy nor Alembic; any other case takes the full start, which prints the same.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import json
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from .errors import OrchestratorError
    from .loader import LoadProgress, ModelManager
    from .orchestrator import CallEvent, Orchestrator
    from .store.failures import FailureCache
    from .store.registry import ModelRegistry
    from .types import Message, ModelStatus

# Keyed by ModelState value, so the module imports no core type before a command needs it.
STATE_ICONS: dict[str, str] = {
    "loaded": "✅", "sleeping": "😴", "loading": "🔄", "downloading": "⬇️", "not_loaded": "💤",
    "unloading": "⏏️", "load_failed": "⛔", "host_down": "❌", "cooling_down": "⏸️", "external_ready": "🌐",
    "external_no_key": "❌", "external_key_rejected": "🚫",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m orchestrator_core", description=__doc__)
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    sub = parser.add_subparsers(dest="command", required=True)

    status = sub.add_parser("status", help="every active model with its state")
    status.add_argument("--refresh", action="store_true", help="ignore the status cache")

    for name, text in (("load", "load a local model and wait for it"), ("unload", "unload a local model")):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("model", help="provider:model, e.g. lmstudio:qwen2.5-7b-instruct")
        if name == "load":
            cmd.add_argument("--timeout", type=float, default=None, help="seconds to wait (default LOAD_TIMEOUT_S)")

    chat = sub.add_parser("chat", help="send one prompt (with check-and-load and fallback)")
    chat.add_argument("model")
    chat.add_argument("prompt", help="the prompt; '-' reads standard input")
    chat.add_argument("--system", default=None)
    chat.add_argument("--temperature", type=float, default=None)
    chat.add_argument("--max-tokens", type=int, default=None)
    chat.add_argument("--no-fallback", action="store_true")
    chat.add_argument("--stream", action="store_true")

    keys = sub.add_parser("keys", help="manage API keys").add_subparsers(dest="keys_command", required=True)
    keys.add_parser("list", help="keys, masked")
    add = keys.add_parser("add", help="store a key (read from standard input when KEY is '-')")
    add.add_argument("provider")
    add.add_argument("key", help="the key, or '-' to read it from standard input (keeps it out of shell history)")
    add.add_argument("--label", default="default")
    test = keys.add_parser("test", help="test one key by id, or all")
    test.add_argument("key_id", nargs="?", default=None)

    sub.add_parser("reset", help="clear the failure cache").add_argument("model", nargs="?", default=None)
    _add_tokens_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _skip_httpx_cli()
    from .errors import OrchestratorError  # noqa: PLC0415 - start-up cost: a command imports what it needs

    try:
        quick = _status_read_only(args) if args.command == "status" else None
        if quick is not None:
            return quick
        orch = _open(args)
    except OrchestratorError as exc:
        return _fail(args, exc)
    except KeyboardInterrupt:  # also during the read-only status's host probe
        return 130
    try:
        return _dispatch(orch, args)
    except OrchestratorError as exc:
        return _fail(args, exc)
    except KeyboardInterrupt:
        return 130
    finally:
        orch.close()


def _open(args: argparse.Namespace) -> Orchestrator:
    from .config import Settings  # noqa: PLC0415 - start-up cost: a command imports what it needs
    from .orchestrator import Orchestrator  # noqa: PLC0415 - start-up cost: a command imports what it needs

    # Read-only commands open without the write check, so they work while another process writes.
    read_only = args.command == "status" or (args.command == "keys" and args.keys_command == "list")
    return Orchestrator.from_settings(Settings.from_env(), check_writable=not read_only)


def _status_read_only(args: argparse.Namespace) -> int | None:
    """``status`` without SQLAlchemy on a current SQLite file; None when the full start must run instead."""
    from .clients import ProviderFactory  # noqa: PLC0415 - start-up cost: a command imports what it needs
    from .config import Settings  # noqa: PLC0415 - start-up cost: a command imports what it needs
    from .loader import ModelManager  # noqa: PLC0415 - start-up cost: a command imports what it needs
    from .store.readonly import NeedsWrite, ReadOnlyStore  # noqa: PLC0415 - start-up cost
    from .store.secret import load_fernet  # noqa: PLC0415 - start-up cost: a command imports what it needs

    settings = Settings.from_env()
    store = ReadOnlyStore.open(settings.database_url)
    if store is None:
        return None
    factory = ProviderFactory(settings, store.key_lookup(load_fernet(settings.secret_key, store.dir),
                                                         settings.env_keys))
    # The manager only reads here (list_with_status and hosts): the read-only views stand in for the stores.
    manager = ModelManager(settings, factory, cast("ModelRegistry", store.registry),
                           cast("FailureCache", store.failures))
    try:
        return _status(manager, args)
    except NeedsWrite:
        return None  # a host lists a new model: the full start registers it, then prints the same
    finally:
        manager.close()
        factory.close()


def _skip_httpx_cli() -> None:
    """httpx imports its own command line (click, rich, pygments) when they are installed: a third of a
    second of start-up for a tool this CLI never runs. An absent module makes httpx skip it."""
    if "httpx" not in sys.modules and "httpx._main" not in sys.modules:
        sys.modules["httpx._main"] = None  # type: ignore[assignment]


def _dispatch(orch: Orchestrator, args: argparse.Namespace) -> int:
    if args.command == "status":
        return _status(orch.manager, args)
    if args.command == "load":
        orch.manager.load(args.model)
        status = orch.manager.wait_for_load(args.model, timeout_s=args.timeout,
                                            on_progress=None if args.json else _print_progress)
        return _out(args, dataclasses.asdict(status), _state_line(args.model, status))
    if args.command == "unload":
        status = orch.manager.unload(args.model)
        return _out(args, dataclasses.asdict(status), _state_line(args.model, status))
    if args.command == "chat":
        return _chat(orch, args)
    if args.command == "reset":
        cleared = orch.manager.reset_failed(args.model)
        return _out(args, {"cleared": cleared}, f"Cleared {cleared} failure entries.")
    if args.command == "tokens":
        return _tokens(orch, args)
    return _keys(orch, args)


def _status(manager: ModelManager, args: argparse.Namespace) -> int:
    statuses = manager.list_with_status(force=args.refresh)
    hosts = manager.hosts()
    if args.json:
        return _print_json({"hosts": [dataclasses.asdict(h) for h in hosts],
                            "models": [dataclasses.asdict(s) for s in statuses]})
    for host in hosts:
        print(f"{'up  ' if host.reachable else 'DOWN'} {host.display_name:<12} {host.base_url}  {host.detail}")
    for s in statuses:
        print(f"{STATE_ICONS.get(s.state.value, '?')} {s.model_id:<45} {s.state.value:<16} {s.detail}")
    return 0


def _chat(orch: Orchestrator, args: argparse.Namespace) -> int:
    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    messages: list[Message] = []
    if args.system:
        messages.append({"role": "system", "content": args.system})
    messages.append({"role": "user", "content": prompt})
    params: dict[str, Any] = {"temperature": args.temperature, "max_tokens": args.max_tokens}
    on_event = None if args.json else _print_event
    fallback = not args.no_fallback
    if args.stream and not args.json:
        stream = orch.stream_chat(args.model, messages, fallback=fallback, on_event=on_event, **params)
        try:
            for piece in stream:
                print(piece, end="", flush=True)
        finally:
            stream.close()  # Ctrl-C or SIGTERM mid-answer: the attempt is recorded as cancelled before exit
        print()
        result = stream.result
    else:
        result = orch.chat(args.model, messages, fallback=fallback, on_event=on_event, **params)
        if not args.json:
            print(result.text)
    if result is None:  # a stream that ended without an error always sets its result
        raise RuntimeError("the stream ended without its result")
    if args.json:
        return _print_json(dataclasses.asdict(result) | {"fell_back": result.fell_back, "cost_usd": result.cost_usd})
    usage = result.result.usage
    via = f" (fell back: {' -> '.join(result.fallback_path)})" if result.fell_back else ""
    cost = "cost unknown" if result.cost_usd is None else f"${result.cost_usd:.6f}"
    print(f"-- {result.model_id}{via}, {result.latency_ms:.0f} ms, tokens {usage.prompt_tokens}/"
          f"{usage.completion_tokens}, {cost}", file=sys.stderr)
    return 0


def _keys(orch: Orchestrator, args: argparse.Namespace) -> int:
    if args.keys_command == "list":
        keys = [dataclasses.asdict(k) for k in orch.keys.list()]
        if args.json:
            return _print_json(keys)
        for k in keys:
            tested = "untested"
            if k["last_tested_at"]:
                tested = f"{k['last_test_status']} at {k['last_tested_at']:%Y-%m-%d %H:%M}"
            print(f"{k['id']!s:<14} {k['provider']:<10} {k['label']:<16} {k['masked']:<10} {k['source']:<7} {tested}")
        return 0
    if args.keys_command == "add":
        key = sys.stdin.readline().strip() if args.key == "-" else args.key
        info = orch.keys.add(args.provider, args.label, key)
        return _out(args, dataclasses.asdict(info), f"Stored {info.provider} key {info.label!r} ({info.masked}).")
    ids = [_key_id(args.key_id)] if args.key_id else [k.id for k in orch.keys.list()]
    results = {str(i): orch.test_key(i) for i in ids}
    if args.json:
        return _print_json({i: dataclasses.asdict(r) for i, r in results.items()})
    for key_id, r in results.items():
        print(f"{key_id:<14} {r.status.value:<17} {r.latency_ms:6.0f} ms  {r.detail}")
    return 0 if all(r.status.value != "rejected" for r in results.values()) else 1


# -- gateway tokens of the HTTP API (api/) -----------------------------------------------------------------
def _add_tokens_parser(sub: Any) -> None:
    tokens = sub.add_parser("tokens", help="gateway tokens for the HTTP API").add_subparsers(
        dest="tokens_command", required=True)
    create = tokens.add_parser("create", help="make a token; it is printed once and never shown again")
    create.add_argument("name", help="who or what uses it, e.g. ci or notebook")
    create.add_argument("--scope", choices=("chat", "admin"), default="chat",
                        help="chat: /v1 and reading /api; admin: also load, unload, reset and /metrics")
    tokens.add_parser("list", help="name, scope, created, last used (never the token)")
    revoke = tokens.add_parser("revoke", help="revoke a token by id or name")
    revoke.add_argument("token", help="the id or name from 'tokens list'")


def _tokens(orch: Orchestrator, args: argparse.Namespace) -> int:
    if args.tokens_command == "create":
        new = orch.tokens.create(args.name, args.scope)
        if args.json:
            return _print_json({"name": new.info.name, "scope": new.info.scope, "token": new.token})
        print(new.token)
        print(f"Gateway token {new.info.name!r} (scope {new.info.scope}) created. It is shown only now: store it "
              "where the client reads it, e.g. OPENAI_API_KEY.", file=sys.stderr)
        return 0
    if args.tokens_command == "revoke":
        info = orch.tokens.revoke(args.token)
        return _out(args, dataclasses.asdict(info), f"Revoked gateway token {info.name!r}.")
    infos = orch.tokens.list_tokens()
    if args.json:
        return _print_json([dataclasses.asdict(i) | {"active": i.active} for i in infos])
    for i in infos:
        used = f"{i.last_used_at:%Y-%m-%d %H:%M}" if i.last_used_at else "never"
        state = "active" if i.active else f"revoked {i.revoked_at:%Y-%m-%d %H:%M}"
        created = f"{i.created_at:%Y-%m-%d %H:%M}"
        print(f"{i.id:<5} {i.name:<24} {i.scope:<6} created {created}  last used {used:<16} {state}")
    return 0


def _key_id(raw: str) -> int | str:
    return int(raw) if raw.isdigit() else raw


def _print_progress(progress: LoadProgress) -> None:
    percent = f" {progress.percent:3.0f}%" if progress.percent is not None else ""
    print(f"  {progress.elapsed_s:5.1f}s {progress.state.value}{percent} {progress.detail}", file=sys.stderr)


def _state_line(model_id: str, status: ModelStatus) -> str:
    """E.g. "llamacpp:tiny-b: not_loaded." or "…: unloading (unload requested 3.0s ago; …)"."""
    detail = f" ({status.detail})" if status.state.value == "unloading" else ""
    return f"{model_id}: {status.state.value}{detail}."


def _print_event(event: CallEvent) -> None:
    if event.kind in ("loading", "attempt_failed", "fallback"):
        print(f"[{event.elapsed_s:5.1f}s] {event.detail}", file=sys.stderr)


def _out(args: argparse.Namespace, data: Any, text: str) -> int:
    if args.json:
        return _print_json(data)
    print(text)
    return 0


def _print_json(data: Any) -> int:
    print(json.dumps(data, default=_json_default, indent=2, ensure_ascii=False))
    return 0


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.value
    return str(value)


def _fail(args: argparse.Namespace, exc: OrchestratorError) -> int:
    from .errors import AllModelsFailedError  # noqa: PLC0415 - start-up cost: a command imports what it needs

    if args.json:
        payload: dict[str, Any] = {"error": exc.kind, "message": exc.message}
        if isinstance(exc, AllModelsFailedError):
            payload["attempts"] = [dataclasses.asdict(a) for a in exc.attempts]
        print(json.dumps(payload, indent=2), file=sys.stdout)
    else:
        print(f"error: {exc.message}", file=sys.stderr)
    return 2 if exc.kind in ("configuration", "database", "secret_key") else 1
