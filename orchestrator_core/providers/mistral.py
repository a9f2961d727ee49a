"""Mistral: OpenAI-like chat; usage arrives in the last chunk unasked and stream_options is rejected."""

from __future__ import annotations

from .openai_compat import OpenAICompatibleProvider


class MistralProvider(OpenAICompatibleProvider):
    kind = name = "mistral"
    display_name = "Mistral"
    default_base_url = "https://api.mistral.ai/v1"
    base_url_env_vars = ("MISTRAL_BASE_URL",)
    key_env_vars = ("MISTRAL_API_KEY",)
    needs_key = True
    price_table_id = "mistral"
    send_stream_usage_option = False
