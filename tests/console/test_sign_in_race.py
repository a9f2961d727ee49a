"""The gate under attack in-process: parallel guesses, and the cache clearing BackMsg.clear_cache runs."""

from __future__ import annotations

import hashlib
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import respx
import streamlit as st
from streamlit.testing.v1 import AppTest

from console import shared
from console.auth import make_pbkdf2_hash, parse_password_hash, try_password
from tests.console.apptools import APP, lmstudio_down

UNLOCK = "FormSubmitter:console_sign_in-Unlock"


@pytest.fixture(autouse=True)
def host_down(wire: respx.MockRouter) -> None:
    lmstudio_down(wire)


def clear_cache_message() -> None:
    """What Streamlit 1.67 does on a client's clear-cache message (AppSession._handle_clear_cache_request)."""
    st.cache_data.clear()
    st.cache_resource.clear()


def try_in_app(at: AppTest, password: str) -> AppTest:
    at.text_input(key="console_password").set_value(password)
    return at.button(key=UNLOCK).click().run()


def test_thirty_parallel_guesses_hash_at_most_max_failures_passwords(monkeypatch: pytest.MonkeyPatch) -> None:
    check = parse_password_hash(make_pbkdf2_hash("the right one", iterations=20_000))
    hashed: list[bytes] = []
    real_pbkdf2 = hashlib.pbkdf2_hmac

    def counting_pbkdf2(*args: Any, **kwargs: Any) -> bytes:
        hashed.append(b"")
        return real_pbkdf2(*args, **kwargs)

    monkeypatch.setattr(hashlib, "pbkdf2_hmac", counting_pbkdf2)
    limiter = shared.limiter()
    start = threading.Barrier(30)

    def guess(number: int) -> str | None:
        start.wait()  # every session submits at the same instant
        return try_password(check, f"guess {number}", limiter)

    with ThreadPoolExecutor(max_workers=30) as pool:
        answers = list(pool.map(guess, range(30)))
    assert len(hashed) <= limiter.max_failures == 5
    assert sum(a is not None and a.startswith("Too many wrong passwords") for a in answers) == 25
    assert try_password(check, "the right one", limiter) is not None  # locked: not even the right one now


def test_clearing_streamlits_caches_neither_resets_the_count_nor_closes_the_orchestrator(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CONSOLE_PASSWORD", "letmein")
    at = AppTest.from_file(APP, default_timeout=10).run()
    for _ in range(3):
        try_in_app(at, "guess")
    orch = shared.orchestrator()
    clear_cache_message()
    try_in_app(at, "guess")
    assert at.error[0].value == "Wrong password; 1 more attempt before a 60 s lock."
    assert shared.orchestrator() is orch and not orch.metrics._closed  # the same one, not closed (on_release)
    clear_cache_message()
    try_in_app(at, "guess")
    try_in_app(at, "letmein")
    assert at.error[0].value.startswith("Too many wrong passwords; try again in ")


def test_a_new_limiter_after_a_restart_keeps_the_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONSOLE_PASSWORD", "letmein")
    at = AppTest.from_file(APP, default_timeout=10).run()
    for _ in range(2):
        try_in_app(at, "guess")
    shared.reset()  # as a restarted process would: nothing in memory survives
    try_in_app(AppTest.from_file(APP, default_timeout=10).run(), "guess")
    assert at.error[0].value == "Wrong password; 3 more attempts before a 60 s lock."


def test_sign_in_fails_closed_when_the_count_cannot_be_kept(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("CONSOLE_PASSWORD", "letmein")
    at = AppTest.from_file(APP, default_timeout=10).run()
    monkeypatch.setenv("DATABASE_URL", "sqlite:////nonexistent-folder/x.db")  # the limiter opens on first try
    try_in_app(at, "letmein")
    assert not at.exception and [t.value for t in at.title] == ["🔒 Operator console"]
    assert at.error[0].value.startswith("Sign-in is unavailable right now")
    assert "nonexistent-folder" not in at.error[0].value  # the path is in the server log only
    assert "nonexistent-folder" in caplog.text
