"""The explicit registry of provider kinds: the only list of kinds; every other list is derived from it.

A kind is one class. A connection (connections.py) is a name, a kind, a base URL and options; the
environment seeds one connection per kind, named after the kind (``Provider.name``), so the prefix
``openai`` of ``openai:gpt-4.1-mini`` is the seeded connection of kind ``openai``.
"""

from __future__ import annotations

from .anthropic import AnthropicProvider
from .base import Provider
from .custom import CustomProvider
from .gemini import GeminiProvider
from .genspark import GensparkProvider
from .llamacpp import LlamaCppProvider
from .lmstudio import LMStudioProvider
from .mistral import MistralProvider
from .ollama import OllamaProvider
from .openai import OpenAIProvider

KINDS: dict[str, type[Provider]] = {
    cls.kind: cls
    for cls in (
        OpenAIProvider, AnthropicProvider, GeminiProvider, MistralProvider, GensparkProvider, CustomProvider,
        LMStudioProvider, OllamaProvider, LlamaCppProvider,
    )
}

# Derived views: the seeded connection names (the kinds' default names) and which of them are local hosts.
PROVIDERS: dict[str, type[Provider]] = {cls.name: cls for cls in KINDS.values()}
LOCAL_PROVIDERS: tuple[str, ...] = tuple(n for n, c in PROVIDERS.items() if c.local)
HOSTED_PROVIDERS: tuple[str, ...] = tuple(n for n in PROVIDERS if n not in LOCAL_PROVIDERS)
