"""The facts of each kind live on its provider class; every other module derives its lists from the registry."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from orchestrator_core.config import DEFAULT_BASE_URLS, Settings
from orchestrator_core.connections import kinds
from orchestrator_core.providers.registry import KINDS, PROVIDERS

REPO = Path(__file__).resolve().parents[1]
# The modules that used to keep their own list of providers, base URLs or variable names.
DERIVING = ("orchestrator_core/config.py", "orchestrator_core/store/keys.py", "orchestrator_core/store/registry.py",
            "orchestrator_core/fallback.py", "orchestrator_core/loader.py", "orchestrator_core/clients.py",
            "orchestrator_core/orchestrator.py", "app_pages/keys.py", "console/views.py")


def _facts() -> set[str]:
    """Every kind name, seeded connection name, default URL and environment variable name of the registry."""
    facts = set(KINDS) | set(PROVIDERS)
    for cls in KINDS.values():
        facts |= {*cls.key_env_vars, *cls.base_url_env_vars}
        if cls.default_base_url:
            facts.add(cls.default_base_url)
    return facts


def _string_literals(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef)) and n.body
                  and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    return [n.value for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings]


@pytest.mark.parametrize("module", DERIVING)
def test_no_module_keeps_a_second_list_of_kinds_urls_or_variables(module: str) -> None:
    facts = _facts()
    words = re.compile(r"[A-Za-z0-9_:/.\-]+")
    found = {w for text in _string_literals(REPO / module) for w in words.findall(text) if w in facts}
    assert found == set(), f"{module} names {sorted(found)}: derive them from providers.registry.KINDS"


def test_settings_read_every_kind_s_variables_and_aliases_from_its_class(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {}
    for cls in KINDS.values():
        for i, var in enumerate(cls.key_env_vars):
            env[var] = f"key-{cls.name}-{i}-0123456789"
        for var in cls.base_url_env_vars[1:]:  # an alias alone is read too
            env[var] = f"http://127.0.0.1:9/{cls.name}-alias"

    s = Settings.from_env(env)

    assert s.env_keys == {cls.name: f"key-{cls.name}-0-0123456789" for cls in KINDS.values() if cls.key_env_vars}
    assert s.base_url("google") == "http://127.0.0.1:9/google-alias"  # GEMINI_BASE_URL
    assert s.env_keys["google"].startswith("key-google-0")  # GOOGLE_API_KEY wins over the GEMINI_API_KEY alias
    assert {c.name: c.default_base_url for c in KINDS.values()} == DEFAULT_BASE_URLS


def test_a_kind_is_known_everywhere_once_its_class_is_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestrator_core.providers import registry
    from orchestrator_core.providers.openai_compat import OpenAICompatibleProvider

    class Groq(OpenAICompatibleProvider):
        kind = name = "groqish"
        display_name = "Groq-ish"
        default_base_url = "https://api.groq.invalid/openai/v1"
        base_url_env_vars = ("GROQISH_BASE_URL",)
        key_env_vars = ("GROQISH_API_KEY",)
        needs_key = True

    monkeypatch.setitem(registry.KINDS, "groqish", Groq)
    monkeypatch.setitem(registry.PROVIDERS, "groqish", Groq)

    s = Settings.from_env({"GROQISH_API_KEY": "gsk-0123456789abcdef", "GROQISH_BASE_URL": "http://127.0.0.1:9/v1"})

    assert s.env_keys["groqish"] == "gsk-0123456789abcdef"
    assert s.base_url("groqish") == "http://127.0.0.1:9/v1"
    assert next(k for k in kinds() if k.kind == "groqish").needs_key is True
