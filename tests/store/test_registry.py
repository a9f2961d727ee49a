"""ModelRegistry: seeded models, add/remove/activate/prioritise, discovery that keeps operator choices."""

from __future__ import annotations

import pytest

from orchestrator_core.errors import InputError, InvalidModelIdError, UnknownProviderError
from orchestrator_core.store import Database, ModelRegistry


def test_list_returns_seed_models_by_priority(db: Database) -> None:
    models = ModelRegistry(db).list()
    assert [m.model_id for m in models] == [
        "openai:gpt-4.1-mini",
        "anthropic:claude-haiku-4-5",
        "google:gemini-2.5-flash",
        "mistral:mistral-small-latest",
    ]
    first = models[0]
    assert (first.provider, first.name, first.display_name, first.source, first.active) == (
        "openai", "gpt-4.1-mini", "GPT-4.1 mini", "seed", True
    )
    assert first.created_at.tzinfo is not None


def test_add_and_get_a_model(db: Database) -> None:
    registry = ModelRegistry(db)
    entry = registry.add("ollama:llama3.2:3b", priority=5)
    assert (entry.provider, entry.name, entry.display_name) == ("ollama", "llama3.2:3b", "llama3.2:3b")
    assert entry.source == "user"
    assert registry.get("ollama:llama3.2:3b") == entry
    assert registry.list()[0].model_id == "ollama:llama3.2:3b"  # priority 5 comes first
    assert registry.get("ollama:nothing") is None


def test_adding_a_registered_model_again_is_rejected(db: Database) -> None:
    registry = ModelRegistry(db)
    with pytest.raises(InvalidModelIdError, match="already registered"):
        registry.add("openai:gpt-4.1-mini")
    assert len(registry.list()) == 4


def test_add_validates_the_id_provider_and_source(db: Database) -> None:
    registry = ModelRegistry(db, known_providers=("openai", "ollama"))
    with pytest.raises(InvalidModelIdError, match="not of the form provider:model"):
        registry.add("gpt-4o")
    with pytest.raises(UnknownProviderError, match="Unknown provider 'google'"):
        registry.add("google:gemini-2.0-flash")
    with pytest.raises(InputError, match="source 'magic'"):
        registry.add("openai:gpt-5", source="magic")
    assert len(registry.list()) == 4


def test_remove_unregisters_and_unknown_models_are_reported(db: Database) -> None:
    registry = ModelRegistry(db)
    registry.remove("google:gemini-2.5-flash")
    assert registry.get("google:gemini-2.5-flash") is None
    with pytest.raises(InvalidModelIdError, match="is not registered"):
        registry.remove("google:gemini-2.5-flash")
    with pytest.raises(InvalidModelIdError, match="is not registered"):
        registry.set_active("openai:nope", False)


def test_set_active_and_active_only(db: Database) -> None:
    registry = ModelRegistry(db)
    entry = registry.set_active("openai:gpt-4.1-mini", False)
    assert not entry.active and entry.updated_at >= entry.created_at
    active = [m.model_id for m in registry.list(active_only=True)]
    assert "openai:gpt-4.1-mini" not in active and len(active) == 3


def test_set_priority_reorders(db: Database) -> None:
    registry = ModelRegistry(db)
    registry.set_priority("mistral:mistral-small-latest", 1)
    assert registry.list()[0].model_id == "mistral:mistral-small-latest"
    assert registry.get("mistral:mistral-small-latest").priority == 1  # type: ignore[union-attr]


def test_sync_discovered_adds_new_models_and_keeps_operator_choices(db: Database) -> None:
    registry = ModelRegistry(db)
    assert registry.sync_discovered("lmstudio", ["qwen2.5-7b-instruct", "llama-3.2-1b"]) == [
        "lmstudio:qwen2.5-7b-instruct", "lmstudio:llama-3.2-1b",
    ]
    new = registry.get("lmstudio:qwen2.5-7b-instruct")
    assert new is not None and (new.source, new.active, new.priority) == ("discovered", True, 200)
    registry.set_active("lmstudio:qwen2.5-7b-instruct", False)
    registry.set_priority("lmstudio:llama-3.2-1b", 7)
    # The host no longer lists llama; it lists a new model and a name with a space.
    assert registry.sync_discovered("lmstudio", ["qwen2.5-7b-instruct", "phi-4", "bad name"]) == ["lmstudio:phi-4"]
    assert registry.get("lmstudio:qwen2.5-7b-instruct").active is False  # type: ignore[union-attr]
    assert registry.get("lmstudio:llama-3.2-1b").priority == 7  # type: ignore[union-attr]
    assert registry.get("lmstudio:bad name") is None
    assert registry.sync_discovered("lmstudio", []) == []


def test_a_model_id_longer_than_the_255_character_column_is_an_input_error(db: Database) -> None:
    registry = ModelRegistry(db)
    longest = "openai:" + "m" * (255 - len("openai:"))
    assert registry.add(longest).model_id == longest
    with pytest.raises(InvalidModelIdError, match="over the limit of 255"):
        registry.add(longest + "m")
    assert registry.get(longest + "m") is None


def test_discovery_skips_a_name_too_long_to_store_and_keeps_the_others(db: Database) -> None:
    added = ModelRegistry(db).sync_discovered("ollama", ["n" * 300, "llama3.2:3b"])
    assert added == ["ollama:llama3.2:3b"]
    assert [e.model_id for e in ModelRegistry(db).list() if e.provider == "ollama"] == ["ollama:llama3.2:3b"]
