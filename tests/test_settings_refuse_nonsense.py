"""Settings refuse nonsense at start: nan, inf, negative or fractional whole numbers, blank secrets.

The table covers every numeric field of Settings (read from the dataclass, so a new one is covered
the day it is added); each bad value must raise ConfigurationError naming the variable, the CLI
must exit 2 without a traceback, and the console must show its start-up error page.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator_core.config import LOCAL_PROVIDERS, Settings
from orchestrator_core.errors import ConfigurationError

REPO = Path(__file__).resolve().parents[1]
NUMERIC = {f.name.upper(): f.type for f in dataclasses.fields(Settings) if f.type in ("int", "float")}
ALWAYS_BAD = ("nan", "NaN", "inf", "-inf", "Infinity", "-1", "ten", "1e400")
WHOLE_BAD = ("2.5", "1e3", "3.0", "0x10")


def bad_values() -> list[tuple[str, str]]:
    cases = [(name, value) for name in NUMERIC for value in ALWAYS_BAD]
    cases += [(name, value) for name, kind in NUMERIC.items() if kind == "int" for value in WHOLE_BAD]
    return cases


def test_the_table_covers_the_whole_numbers_and_the_timeouts() -> None:
    assert {"MAX_FALLBACK_HOPS", "DEFAULT_MAX_TOKENS"} <= {n for n, k in NUMERIC.items() if k == "int"}
    assert {"CONNECT_TIMEOUT_S", "READ_TIMEOUT_S", "LOAD_TIMEOUT_S", "FAILURE_COOLDOWN_S"} <= set(NUMERIC)


@pytest.mark.parametrize(("name", "value"), bad_values())
def test_every_numeric_setting_refuses_nonsense_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        Settings.from_env({name: value})
    assert name in info.value.message


@pytest.mark.parametrize(("name", "value", "expected"), [
    ("MAX_FALLBACK_HOPS", "0", 0), ("MAX_FALLBACK_HOPS", " 5 ", 5), ("DEFAULT_MAX_TOKENS", "4096", 4096),
    ("READ_TIMEOUT_S", "0.5", 0.5), ("FAILURE_COOLDOWN_S", "0", 0.0),
])
def test_sensible_numbers_are_still_accepted(name: str, value: str, expected: float) -> None:
    assert getattr(Settings.from_env({name: value}), name.lower()) == expected


def test_zero_max_tokens_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="DEFAULT_MAX_TOKENS"):
        Settings.from_env({"DEFAULT_MAX_TOKENS": "0"})


@pytest.mark.parametrize("raw", ["", " ", ",", " , "])
def test_empty_local_hosts_means_probe_none(raw: str) -> None:
    assert Settings.from_env({"LOCAL_HOSTS": raw}).local_hosts == ()


def test_unset_local_hosts_means_probe_every_local_host() -> None:
    assert Settings.from_env({}).local_hosts == LOCAL_PROVIDERS


@pytest.mark.parametrize("raw", [" ", "\t", "  \n "])
def test_whitespace_only_secret_key_is_refused(raw: str) -> None:
    with pytest.raises(ConfigurationError, match="ORCHESTRATOR_SECRET_KEY"):
        Settings.from_env({"ORCHESTRATOR_SECRET_KEY": raw})


def test_empty_secret_key_means_the_key_file() -> None:
    assert Settings.from_env({"ORCHESTRATOR_SECRET_KEY": ""}).secret_key is None


@pytest.mark.parametrize(("name", "value"), [("MAX_FALLBACK_HOPS", "nan"), ("DEFAULT_MAX_TOKENS", "2.5"),
                                             ("ORCHESTRATOR_SECRET_KEY", "   ")])
def test_cli_exits_2_naming_the_variable_without_a_traceback(name: str, value: str, tmp_path: Path) -> None:
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(REPO), "HOME": str(tmp_path),
           "DATABASE_URL": f"sqlite:///{tmp_path / 'o.db'}", "LOCAL_HOSTS": "", name: value}
    done = subprocess.run([sys.executable, "-m", "orchestrator_core", "status"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert name in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_console_shows_its_start_up_page_for_a_bad_setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'o.db'}")
    monkeypatch.setenv("MAX_FALLBACK_HOPS", "inf")
    st.cache_resource.clear()
    at = AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=30).run()
    st.cache_resource.clear()
    assert not at.exception
    assert [t.value for t in at.title] == ["The console cannot start"]
    assert any("MAX_FALLBACK_HOPS" in e.value for e in at.error)
