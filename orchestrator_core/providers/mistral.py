"""Mistral: OpenAI-like chat; usage arrives in the last chunk unasked and stream_options is rejected."""

from __future__ import annotations

from .openai_compat import OpenAICompatibleProvider


class MistralProvider(OpenAICompatibleProvider):
    name = "mistral"
    display_name = "Mistral"
    needs_key = True
    key_env_var = "MISTRAL_API_KEY"
    price_table_id = "mistral"
    send_stream_usage_option = False
