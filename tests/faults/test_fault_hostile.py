"""A hostile or broken host cannot hang a call or fill memory: whole-call and idle deadlines, size caps.

httpx's timeouts are per read, so every host here keeps each read short (a byte, a comment, a token)
and the read timeout generous: only the new whole-call and idle deadlines can end these calls.
"""

from __future__ import annotations

import functools
import json
import resource
import socket
import struct
import threading
import zlib
from typing import Any

import pytest

from orchestrator_core.clients import ProviderFactory
from orchestrator_core.errors import (
    BadResponseError,
    DatabaseError,
    OrchestratorError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    StreamInterruptedError,
)
from orchestrator_core.store import Database
from tests.faults.conftest import ROOMY, OrchFactory, assert_nothing_left_behind, metric_rows, running_threads
from tests.faults.fault_server import FaultServer, Reply
from tests.faults.wire import (
    HELLO,
    LMSTUDIO_LOAD,
    LMSTUDIO_STATUS,
    SHAPES,
    gemini_chunk,
    lmstudio_models,
    openai_answer,
    openai_chunk,
    sse,
)
from tests.helpers import settings

OPENAI, ANTHROPIC, GOOGLE = SHAPES["openai"], SHAPES["anthropic"], SHAPES["google"]
# Reads always succeed well inside READ_TIMEOUT_S; the deadlines are what must end the call.
HOSTILE = {**ROOMY, "read_timeout_s": 10.0, "call_deadline_s": 0.6, "stream_idle_timeout_s": 0.4}
# What a test may add to the process's memory at its peak; the 1 GiB bomb expanded would add ~1,024 MB. Measured
# from the test's start (the high-water mark reset then): the process's own peak depends on what ran before it
# in the same worker, and it reached 500 MB with nothing hostile going on.
MEMORY_GROWTH_CEILING_MB = 300
_START_MB = 0.0


@pytest.fixture(autouse=True)
def _memory_from_here() -> None:
    """Reset the high-water mark of resident memory to what is resident now (Linux clear_refs 5)."""
    global _START_MB
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")
    _START_MB = _status_mb("VmRSS")


def grown_rss_mb() -> float:
    """The most resident memory this process held since the test began, over what it held then."""
    return max(_status_mb("VmHWM"), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024) - _START_MB


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith(field + ":"))
    return int(line.split()[1]) / 1024


@functools.cache
def gzip_bomb(mib: int = 1024) -> bytes:
    """A valid gzip body of about 1 MiB that inflates to ``mib`` MiB of zeros (built in 2 s, not 20)."""
    zeros = bytes(1 << 20)
    deflate = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    first = deflate.compress(zeros) + deflate.flush(zlib.Z_FULL_FLUSH)
    block = deflate.compress(zeros) + deflate.flush(zlib.Z_FULL_FLUSH)  # after a full flush every block is alike
    crc = 0
    for _ in range(mib):
        crc = zlib.crc32(zeros, crc)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\x03"
    return header + first + block * (mib - 1) + deflate.flush() + struct.pack("<II", crc, (mib << 20) & 0xFFFFFFFF)


def run(call: Any) -> BaseException:
    """Run a call that must fail, on a thread with a generous bound, so a hang fails the test instead of it."""
    caught: list[BaseException] = []

    def target() -> None:
        try:
            result = call()
            caught.append(AssertionError(f"the call did not fail: {str(result)[:300]}"))
        except BaseException as exc:
            caught.append(exc)

    thread = threading.Thread(target=target, name="hostile-call", daemon=True)
    thread.start()
    thread.join(20)
    assert caught, "the call hung"
    return caught[0]


def stream_all(orch: Any, model_id: str) -> list[str]:
    return list(orch.stream_chat(model_id, HELLO, fallback=False))


# ---------------------------------------------------------------------------------------------
# Deadlines


def test_body_trickled_a_byte_at_a_time_ends_at_the_call_deadline(server: FaultServer, make_orch: OrchFactory) -> None:
    body = json.dumps(openai_answer("x" * 2000, OPENAI.model)).encode()  # ~40 s at this pace
    server.script(OPENAI.call_path(False), Reply.trickle(body, every_s=0.02))
    baseline = running_threads()
    orch = make_orch(**HOSTILE)
    error = run(lambda: orch.chat(OPENAI.model_id, HELLO, fallback=False))
    assert type(error) is ProviderTimeoutError, repr(error)
    assert "CALL_DEADLINE_S" in str(error) and "0.6s" in str(error)
    assert [(r.outcome, r.error_kind) for r in metric_rows(orch)] == [("error", "timeout")]
    orch.close()
    assert_nothing_left_behind(server, baseline)


def test_headers_trickled_a_byte_at_a_time_end_at_the_call_deadline(server: FaultServer, make_orch: OrchFactory) -> None:
    body = json.dumps(openai_answer("hi", OPENAI.model)).encode()
    padding = {"x-padding": "p" * 2000}  # the headers alone take 40 s
    server.script(OPENAI.call_path(False), Reply.trickle(body, every_s=0.02, headers_too=True, headers=padding))
    baseline = running_threads()
    orch = make_orch(**HOSTILE)
    error = run(lambda: orch.chat(OPENAI.model_id, HELLO, fallback=False))
    assert type(error) is ProviderTimeoutError, repr(error)
    assert "CALL_DEADLINE_S" in str(error)
    orch.close()
    assert_nothing_left_behind(server, baseline)


def test_host_that_goes_silent_mid_body_is_cut_at_the_call_deadline_not_the_read_timeout(
    server: FaultServer, make_orch: OrchFactory
) -> None:
    server.script(OPENAI.call_path(False), Reply.partial(openai_answer("hi", OPENAI.model), sent=10, then="stall"))
    baseline = running_threads()
    orch = make_orch(**{**HOSTILE, "read_timeout_s": 30.0})  # the read alone would wait 30 s
    error = run(lambda: orch.chat(OPENAI.model_id, HELLO, fallback=False))
    assert type(error) is ProviderTimeoutError, repr(error)
    assert "CALL_DEADLINE_S" in str(error)
    orch.close()
    assert_nothing_left_behind(server, baseline)


@pytest.mark.parametrize("shape", [OPENAI, ANTHROPIC, GOOGLE], ids=lambda s: s.provider)
def test_stream_of_only_keep_alive_comments_ends_at_the_idle_deadline(
    shape: Any, server: FaultServer, make_orch: OrchFactory
) -> None:
    server.script(shape.call_path(True), Reply.endless(b": keep-alive\n\n", every_s=0.02))
    baseline = running_threads()
    orch = make_orch(**{**HOSTILE, "call_deadline_s": 30.0})
    error = run(lambda: stream_all(orch, shape.model_id))
    assert type(error) is ProviderTimeoutError, repr(error)
    assert "STREAM_IDLE_TIMEOUT_S" in str(error) and "0.4s" in str(error)
    orch.close()
    assert_nothing_left_behind(server, baseline)


@pytest.mark.parametrize("shape", [OPENAI, GOOGLE], ids=lambda s: s.provider)
def test_endless_token_stream_ends_at_the_call_deadline(shape: Any, server: FaultServer, make_orch: OrchFactory) -> None:
    token = sse(gemini_chunk("la ") if shape is GOOGLE else openai_chunk("la ", shape.model))[0]
    server.script(shape.call_path(True), Reply.endless(token, every_s=0.005))
    baseline = running_threads()
    orch = make_orch(**HOSTILE)
    pieces: list[str] = []

    def read() -> None:
        pieces.extend(orch.stream_chat(shape.model_id, HELLO, fallback=False))

    error = run(read)
    assert type(error) is StreamInterruptedError, repr(error)
    assert type(error.cause) is ProviderTimeoutError and "CALL_DEADLINE_S" in str(error)
    assert pieces and set(pieces) == {"la "}  # the text before the cut reached the reader
    orch.close()
    assert_nothing_left_behind(server, baseline)


def test_model_load_that_trickles_its_answer_ends_at_the_load_timeout(server: FaultServer) -> None:
    server.script(LMSTUDIO_STATUS, Reply.json(200, lmstudio_models(loaded=False)))
    body = json.dumps({"instance_id": "qwen", "status": "loaded"}).encode()
    server.script(LMSTUDIO_LOAD, Reply.trickle(body, every_s=0.05))  # each byte well inside the read timeout
    baseline = running_threads()
    factory = ProviderFactory(settings("sqlite://", base_urls={"lmstudio": server.url + "/lmstudio"},
                                       load_timeout_s=0.5, read_timeout_s=10.0))
    error = run(lambda: factory.host("lmstudio").load_model("qwen"))
    factory.close()
    assert type(error) is ProviderTimeoutError, repr(error)
    assert "LOAD_TIMEOUT_S" in str(error)
    assert_nothing_left_behind(server, baseline)


def test_status_probe_that_trickles_ends_within_the_status_timeout(server: FaultServer) -> None:
    body = json.dumps(lmstudio_models(loaded=True)).encode()
    server.script(LMSTUDIO_STATUS, Reply.trickle(body, every_s=0.02))
    baseline = running_threads()
    factory = ProviderFactory(settings("sqlite://", base_urls={"lmstudio": server.url + "/lmstudio"},
                                       status_timeout_s=0.4))
    error = run(lambda: factory.host("lmstudio", "status").host_models())
    factory.close()
    assert isinstance(error, (ProviderTimeoutError, ProviderUnavailableError)), repr(error)
    assert "STATUS_TIMEOUT_S" in str(error)
    assert_nothing_left_behind(server, baseline)


# ---------------------------------------------------------------------------------------------
# Memory


def test_gzip_bomb_is_refused_at_the_body_cap_and_never_expands_in_memory(
    server: FaultServer, make_orch: OrchFactory
) -> None:
    bomb = gzip_bomb()
    server.script(OPENAI.call_path(False), Reply(200, bomb, {"content-type": "application/json",
                                                            "content-encoding": "gzip"}))
    baseline = running_threads()
    orch = make_orch(**ROOMY)
    error = run(lambda: orch.chat(OPENAI.model_id, HELLO, fallback=False))
    assert type(error) is BadResponseError, repr(error)
    assert "MAX_RESPONSE_BYTES" in str(error) and str(8 * 1024 * 1024) in str(error)
    assert grown_rss_mb() < MEMORY_GROWTH_CEILING_MB
    orch.close()
    assert_nothing_left_behind(server, baseline)


def test_gzip_bomb_in_an_error_body_is_read_only_as_far_as_its_message_needs(
    server: FaultServer, make_orch: OrchFactory
) -> None:
    bomb = gzip_bomb()
    server.script(OPENAI.call_path(False), Reply(500, bomb, {"content-type": "text/plain", "content-encoding": "gzip"}))
    orch = make_orch(**ROOMY)
    error = run(lambda: orch.chat(OPENAI.model_id, HELLO, fallback=False))
    assert type(error) is ProviderUnavailableError and "HTTP 500" in str(error), repr(error)
    assert len(str(error)) < 1000
    assert grown_rss_mb() < MEMORY_GROWTH_CEILING_MB


def test_stacked_gzip_codings_inflate_a_bounded_step_at_a_time(server: FaultServer, make_orch: OrchFactory) -> None:
    # gzip of a gzip bomb: httpx would inflate each 64 KiB read of the outer layer into ~64 MiB of inner
    # bomb, and that into ~64 GiB.
    outer = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    double = outer.compress(gzip_bomb()) + outer.flush()
    server.script(OPENAI.call_path(False), Reply(200, double, {"content-type": "application/json",
                                                              "content-encoding": "gzip, gzip"}))
    orch = make_orch(**ROOMY)
    error = run(lambda: orch.chat(OPENAI.model_id, HELLO, fallback=False))
    assert type(error) is BadResponseError and "MAX_RESPONSE_BYTES" in str(error), repr(error)
    assert grown_rss_mb() < MEMORY_GROWTH_CEILING_MB


def test_endless_stream_of_big_tokens_is_cut_at_the_answer_cap(server: FaultServer, make_orch: OrchFactory) -> None:
    token = sse(openai_chunk("y" * 65536, OPENAI.model))[0]
    server.script(OPENAI.call_path(True), Reply.endless(token))
    baseline = running_threads()
    orch = make_orch(**{**HOSTILE, "call_deadline_s": 5.0})
    read = 0

    def consume() -> None:
        nonlocal read
        for piece in orch.stream_chat(OPENAI.model_id, HELLO, fallback=False):
            read += len(piece)  # the reader keeps nothing, so only the orchestrator could hold memory

    error = run(consume)
    assert type(error) is StreamInterruptedError, repr(error)
    assert type(error.cause) is BadResponseError and "MAX_ANSWER_CHARS" in str(error)
    assert 0 < read <= 1_000_000
    assert grown_rss_mb() < MEMORY_GROWTH_CEILING_MB
    orch.close()
    assert_nothing_left_behind(server, baseline)


def test_stream_line_that_never_ends_is_cut_at_the_body_cap(server: FaultServer, make_orch: OrchFactory) -> None:
    server.script(OPENAI.call_path(True), Reply.endless(b"z" * 65536, first=[b'data: {"x": "']))
    orch = make_orch(**{**HOSTILE, "call_deadline_s": 5.0, "max_response_bytes": 1 << 20})
    error = run(lambda: stream_all(orch, OPENAI.model_id))
    assert type(error) is BadResponseError and "stream line" in str(error) and "MAX_RESPONSE_BYTES" in str(error)
    assert grown_rss_mb() < MEMORY_GROWTH_CEILING_MB


def test_json_answer_over_the_body_cap_is_refused_naming_the_cap(server: FaultServer, make_orch: OrchFactory) -> None:
    server.script(OPENAI.call_path(False), Reply.json(200, openai_answer("w" * 300_000, OPENAI.model)))
    orch = make_orch(**{**ROOMY, "max_response_bytes": 100_000})
    error = run(lambda: orch.chat(OPENAI.model_id, HELLO, fallback=False))
    assert type(error) is BadResponseError, repr(error)
    assert "100000 bytes (MAX_RESPONSE_BYTES)" in str(error)


# ---------------------------------------------------------------------------------------------
# A database server that accepts and never answers


def test_postgresql_server_that_accepts_but_never_answers_fails_startup_within_the_connect_timeout() -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # the kernel completes every handshake; nothing ever reads or answers
    port = silent.getsockname()[1]
    try:
        error = run(lambda: Database.open(f"postgresql+psycopg://user:pw@127.0.0.1:{port}/app", connect_timeout_s=2))
    finally:
        silent.close()
    assert isinstance(error, DatabaseError), repr(error)
    message = str(error)
    assert "2 s" in message and "DB_CONNECT_TIMEOUT_S" in message and "pw" not in message
    assert isinstance(error, OrchestratorError)
