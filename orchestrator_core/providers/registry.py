"""The explicit provider registry: the prefix of a model id names one of these classes."""

from __future__ import annotations

from .anthropic import AnthropicProvider
from .base import LocalHost, Provider
from .custom import CustomProvider
from .gemini import GeminiProvider
from .genspark import GensparkProvider
from .llamacpp import LlamaCppProvider
from .lmstudio import LMStudioProvider
from .mistral import MistralProvider
from .ollama import OllamaProvider
from .openai import OpenAIProvider

PROVIDERS: dict[str, type[Provider]] = {
    "openai": OpenAIProvider,
    "anthropic": AnthropicProvider,
    "google": GeminiProvider,
    "mistral": MistralProvider,
    "genspark": GensparkProvider,
    "custom": CustomProvider,
    "lmstudio": LMStudioProvider,
    "ollama": OllamaProvider,
    "llamacpp": LlamaCppProvider,
}

LOCAL_PROVIDERS: tuple[str, ...] = tuple(n for n, c in PROVIDERS.items() if issubclass(c, LocalHost))
HOSTED_PROVIDERS: tuple[str, ...] = tuple(n for n in PROVIDERS if n not in LOCAL_PROVIDERS)


def provider_class(name: str) -> type[Provider]:
    """The class for a provider prefix, or UnknownProviderError naming the known ones."""
    found = PROVIDERS.get(name)
    if found is not None:
        return found
    from ..errors import UnknownProviderError  # noqa: PLC0415 - errors is imported by the providers this module imports

    raise UnknownProviderError(
        f"Unknown provider {name!r}; use one of: {', '.join(PROVIDERS)}.", provider=name
    )


def is_local(name: str) -> bool:
    return name in LOCAL_PROVIDERS
