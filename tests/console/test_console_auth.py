"""The password gate without Streamlit: hash formats, constant-time checks (the limiter: test_sign_in_race.py)."""

from __future__ import annotations

import hashlib

import pytest

from console.auth import make_pbkdf2_hash, parse_password_hash, password_check_from_env
from orchestrator_core.errors import ConfigurationError


def test_sha256_hash_accepts_the_right_password_only() -> None:
    check = parse_password_hash("sha256:" + hashlib.sha256(b"open sesame").hexdigest())
    assert check.scheme == "sha256"
    assert check.verify("open sesame")
    assert not check.verify("open sesame ") and not check.verify("")


def test_pbkdf2_hash_made_by_the_helper_round_trips() -> None:
    spec = make_pbkdf2_hash("hunter2", iterations=1000, salt="pepper")
    assert spec.startswith("pbkdf2_sha256$1000$pepper$") and "hunter2" not in spec
    check = parse_password_hash(spec)
    assert (check.scheme, check.iterations, check.salt) == ("pbkdf2_sha256", 1000, b"pepper")
    assert check.verify("hunter2") and not check.verify("hunter3")


@pytest.mark.parametrize("spec", [
    "md5:abc",
    "sha256:nothex",
    "sha256:" + "ab" * 31,
    "pbkdf2_sha256$many$salt$" + "ab" * 32,
    "pbkdf2_sha256$1000$$" + "ab" * 32,
    "pbkdf2_sha256$1000$salt",
])
def test_malformed_hash_is_a_configuration_error_that_says_how_to_fix_it(spec: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        parse_password_hash(spec)
    assert "python -m console.auth" in info.value.message


def test_too_few_pbkdf2_iterations_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="iterations"):
        parse_password_hash(make_pbkdf2_hash("pw", iterations=10))


def test_env_plain_password_works_and_a_hash_takes_precedence() -> None:
    assert password_check_from_env({}) is None
    assert password_check_from_env({"CONSOLE_PASSWORD": ""}) is None
    plain = password_check_from_env({"CONSOLE_PASSWORD": "letmein"})
    assert plain is not None and plain.verify("letmein") and not plain.verify("letmeout")
    both = password_check_from_env({"CONSOLE_PASSWORD": "letmein",
                                    "CONSOLE_PASSWORD_HASH": "sha256:" + hashlib.sha256(b"other").hexdigest()})
    assert both is not None and both.verify("other") and not both.verify("letmein")
