"""OpenAI: Chat Completions with ``max_completion_tokens`` (``max_tokens`` is deprecated there)."""

from __future__ import annotations

from .openai_compat import OpenAICompatibleProvider


class OpenAIProvider(OpenAICompatibleProvider):
    kind = name = "openai"
    display_name = "OpenAI"
    default_base_url = "https://api.openai.com/v1"
    base_url_env_vars = ("OPENAI_BASE_URL",)
    key_env_vars = ("OPENAI_API_KEY",)
    needs_key = True
    price_table_id = "openai"
    max_tokens_field = "max_completion_tokens"
    # GPT-5 and the o-series reasoning models accept only the default temperature (and no top_p): "Unsupported
    # value: 'temperature' does not support 0.7 with this model. Only the default (1) value is supported."
    fixed_sampling_models = ("gpt-5", "o1", "o3", "o4")
