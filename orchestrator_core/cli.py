"""Command line: ``python -m orchestrator_core status|load|unload|chat|keys|tokens|connections|groups ...``.

``--json`` (before the command, or after the connections and groups commands) prints JSON for scripts.

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
    from .connections import Connection
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
    _add_connections_parser(sub)
    _add_groups_parser(sub)
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
    read_only = args.command == "status" or (args.command == "keys" and args.keys_command == "list") or (
        args.command in ("connections", "groups") and getattr(args, f"{args.command}_command") == "list")
    return Orchestrator.from_settings(Settings.from_env(), check_writable=not read_only)


def _status_read_only(args: argparse.Namespace) -> int | None:
    """``status`` without SQLAlchemy on a current SQLite file; None when the full start must run instead."""
    from .clients import ProviderFactory  # noqa: PLC0415 - start-up cost: a command imports what it needs
    from .config import Settings  # noqa: PLC0415 - start-up cost: a command imports what it needs
    from .loader import ModelManager  # noqa: PLC0415 - start-up cost: a command imports what it needs
    from .providers.plain import PlainClient  # noqa: PLC0415 - start-up cost: a command imports what it needs
    from .store.readonly import NeedsWrite, ReadOnlyStore  # noqa: PLC0415 - start-up cost
    from .store.secret import fernet_key  # noqa: PLC0415 - start-up cost: a command imports what it needs

    settings = Settings.from_env()
    store = ReadOnlyStore.open(settings.database_url)
    if store is None:
        return None
    keys = store.key_lookup(fernet_key(settings.secret_key, store.dir), settings.env_keys)
    connections = store.connections(settings)
    # The hosts are asked through http.client where that sends what httpx would (plain http, no proxy).
    plain = all(PlainClient.serves(c.base_url) for c in connections.list() if c.local and c.enabled)
    factory = ProviderFactory(settings, keys, connections=connections, key_problem=keys.problem,
                              key_present=keys.present, plain=plain)
    # The manager only reads here (list_with_status and hosts): the read-only views stand in for the stores.
    manager = ModelManager(settings, factory, cast("ModelRegistry", store.registry),
                           cast("FailureCache", store.failures), key_rejected=keys.rejected)
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
        orch.load(args.model)
        status = orch.wait_for_load(args.model, timeout_s=args.timeout,
                                    on_progress=None if args.json else _print_progress)
        return _out(args, dataclasses.asdict(status), _state_line(args.model, status))
    if args.command == "unload":
        status = orch.unload(args.model)
        return _out(args, dataclasses.asdict(status), _state_line(args.model, status))
    if args.command == "chat":
        return _chat(orch, args)
    if args.command == "reset":
        cleared = orch.reset_cooldowns(args.model)
        return _out(args, {"cleared": cleared}, f"Cleared {cleared} failure entries.")
    if args.command == "tokens":
        return _tokens(orch, args)
    if args.command == "connections":
        return _connections(orch, args)
    if args.command == "groups":
        return _groups(orch, args)
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


# -- connections and model groups (issue 10) ------------------------------------------------------------------
def _add_connections_parser(sub: Any) -> None:
    conns = sub.add_parser("connections", help="named endpoints of a kind (hosts, OpenAI-compatible services)")
    cmds = conns.add_subparsers(dest="connections_command", required=True)
    _json_flag(cmds.add_parser("list", help="every connection: name, kind, base URL, enabled, keys"))
    add = _json_flag(cmds.add_parser("add", help="add a connection (its key from standard input with --key -)"))
    add.add_argument("name", help="a short slug, the prefix of its model ids, e.g. groq or desk-lmstudio")
    add.add_argument("--kind", required=True, help="openai, anthropic, google, mistral, genspark, "
                     "openai-compatible, lmstudio, ollama or llamacpp")
    _connection_options(add)
    add.add_argument("--key", default=None, metavar="-",
                     help="'-': read the connection's first key from standard input (never on the command line)")
    edit = _json_flag(cmds.add_parser("edit", help="change a connection's URL, options, key mode or enabled flag"))
    edit.add_argument("name")
    _connection_options(edit)
    switch = edit.add_mutually_exclusive_group()
    switch.add_argument("--enable", dest="enabled", action="store_const", const=True, default=None)
    switch.add_argument("--disable", dest="enabled", action="store_const", const=False)
    for name, text in (("remove", "remove a connection: its models are deactivated, its metrics kept "
                                  "(a seeded one is disabled)"),
                       ("test", "reachability, model count and key check")):
        _json_flag(cmds.add_parser(name, help=text)).add_argument("name")


def _connection_options(cmd: Any) -> None:
    cmd.add_argument("--base-url", default=None, help="e.g. http://192.168.1.20:1234 (default: the kind's)")
    cmd.add_argument("--option", action="append", default=None, metavar="NAME=VALUE",
                     help="a kind option such as api_version=v1beta (repeatable)")
    cmd.add_argument("--key-mode", choices=("ordered", "round-robin"), default=None)


def _add_groups_parser(sub: Any) -> None:
    groups = sub.add_parser("groups", help="model groups: a name usable wherever a model id is")
    cmds = groups.add_subparsers(dest="groups_command", required=True)
    _json_flag(cmds.add_parser("list", help="every group with its members in order"))
    put = _json_flag(cmds.add_parser("set", help="create or replace a group"))
    put.add_argument("name", help="e.g. default")
    put.add_argument("models", nargs="+", metavar="MODEL", help="connection:model ids, tried in this order")
    _json_flag(cmds.add_parser("remove", help="remove a group")).add_argument("name")


def _json_flag(cmd: Any) -> Any:
    # SUPPRESS: unset here leaves the --json given before the command in place.
    cmd.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON instead of text")
    return cmd


def _connections(orch: Orchestrator, args: argparse.Namespace) -> int:
    command = args.connections_command
    if command == "list":
        connections = orch.connections()
        if args.json:
            return _print_json([_shown(c) for c in connections])
        for c in connections:
            state = "enabled " if c.enabled else "DISABLED"
            seeded = " (from the environment)" if c.seeded else ""
            print(f"{c.name:<16} {c.kind:<18} {state} {c.key_count} key(s) {c.key_mode.value:<11} "
                  f"{c.shown_url}{seeded}")
        return 0
    if command == "test":
        result = orch.test_connection(args.name)
        _out(args, dataclasses.asdict(result), f"{'up  ' if result.reachable else 'DOWN'} {result.name}: "
             f"{result.detail} ({result.latency_ms:.0f} ms)")
        return 0 if result.reachable else 1
    if command == "remove":
        orch.remove_connection(args.name)
        return _out(args, {"removed": args.name}, f"Removed connection {args.name!r}; its models are deactivated.")
    changes: dict[str, Any] = {"base_url": args.base_url, "options": _options(args.option),
                               "key_mode": args.key_mode}
    if command == "add":
        given = {name: value for name, value in changes.items() if value is not None}  # the rest: defaults
        info = orch.add_connection(args.name, args.kind, key=_stdin_key(args.key), **given)
        return _out(args, _shown(info), f"Added connection {info.name!r} ({info.kind}) at {info.shown_url}.")
    info = orch.edit_connection(args.name, enabled=args.enabled, **changes)
    return _out(args, _shown(info), f"Saved connection {info.name!r}.")


def _shown(connection: Connection) -> dict[str, Any]:
    """A connection as --json prints it: credentials in its URL masked, as everywhere else."""
    return {**dataclasses.asdict(connection), "base_url": connection.shown_url}


def _stdin_key(flag: str | None) -> str | None:
    """The key from standard input for --key -; anything else is refused: argv ends up in shell history."""
    if flag is None:
        return None
    if flag != "-":
        from .errors import InvalidKeyInputError  # noqa: PLC0415 - start-up cost: a command imports what it needs

        raise InvalidKeyInputError("Pass --key - and write the key to standard input (e.g. `pass show groq | "
                                   "python -m orchestrator_core connections add groq ... --key -`); a key on the "
                                   "command line ends up in the shell history.")
    return sys.stdin.readline().strip()


def _options(items: list[str] | None) -> dict[str, str] | None:
    if items is None:
        return None
    pairs = [item.partition("=") for item in items]
    bad = [item for item, (_, sep, _) in zip(items, pairs, strict=True) if not sep]
    if bad:
        from .errors import InvalidConnectionError  # noqa: PLC0415 - start-up cost: a command imports what it needs

        raise InvalidConnectionError(f"--option {bad[0]!r} must look like NAME=VALUE, e.g. api_version=v1beta.")
    return {name.strip(): value.strip() for name, _, value in pairs}


def _groups(orch: Orchestrator, args: argparse.Namespace) -> int:
    if args.groups_command == "set":
        group = orch.set_group(args.name, args.models)
        return _out(args, dataclasses.asdict(group), f"Group {group.name}: {' -> '.join(group.members)}.")
    if args.groups_command == "remove":
        orch.remove_group(args.name)
        return _out(args, {"removed": args.name}, f"Removed group {args.name!r}.")
    groups = orch.groups()
    if args.json:
        return _print_json([dataclasses.asdict(g) for g in groups])
    for g in groups:
        print(f"{g.name:<16} {' -> '.join(g.members)}")
    if not groups:
        print("No model group yet; make one with 'groups set default MODEL [MODEL ...]'.")
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
