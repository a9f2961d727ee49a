"""Settings added for hostile hosts: the call limits and the database connect timeout, and env keys that
could never be sent in an HTTP header."""

from __future__ import annotations

import pytest

from orchestrator_core.config import Settings
from orchestrator_core.errors import ConfigurationError


def test_call_limits_and_db_connect_timeout_are_read_from_the_environment() -> None:
    s = Settings.from_env({"CALL_DEADLINE_S": "90", "STREAM_IDLE_TIMEOUT_S": "15", "MAX_RESPONSE_BYTES": "65536",
                           "MAX_ANSWER_CHARS": "5000", "DB_CONNECT_TIMEOUT_S": "3"})
    assert (s.call_deadline_s, s.stream_idle_timeout_s, s.max_response_bytes, s.max_answer_chars,
            s.db_connect_timeout_s) == (90.0, 15.0, 65536, 5000, 3.0)


def test_call_limit_defaults_leave_room_for_a_slow_local_model() -> None:
    s = Settings.from_env({})
    assert s.call_deadline_s >= 2 * s.read_timeout_s and s.stream_idle_timeout_s >= s.read_timeout_s
    assert s.max_response_bytes >= 1 << 20 and s.max_answer_chars >= 100_000


@pytest.mark.parametrize(("name", "provider"), [("OPENAI_API_KEY", "openai"), ("GEMINI_API_KEY", "google"),
                                                ("LM_API_TOKEN", "lmstudio")])
@pytest.mark.parametrize("char", ["\x00", "\u200b", "\x1b", "\ufeff", "é"])
def test_env_key_with_a_character_no_header_can_carry_is_refused_naming_the_variable(
    name: str, provider: str, char: str
) -> None:
    key = f"sk-env{char}key0123456789"
    with pytest.raises(ConfigurationError, match=name) as info:
        Settings.from_env({name: key})
    assert "sk-env" not in info.value.message and "key0123456789" not in info.value.message
    assert Settings.from_env({name: " sk-envkey0123456789 "}).env_keys[provider] == "sk-envkey0123456789"
