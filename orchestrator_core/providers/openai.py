"""OpenAI: Chat Completions with ``max_completion_tokens`` (``max_tokens`` is deprecated there)."""

from __future__ import annotations

from .openai_compat import OpenAICompatibleProvider


class OpenAIProvider(OpenAICompatibleProvider):
    name = "openai"
    display_name = "OpenAI"
    needs_key = True
    key_env_var = "OPENAI_API_KEY"
    max_tokens_field = "max_completion_tokens"
