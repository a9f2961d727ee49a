"""Any OpenAI-compatible endpoint (vLLM, OpenRouter, Groq, a gateway): kind ``openai-compatible``; the seeded
connection ``custom`` reads CUSTOM_BASE_URL and an optional CUSTOM_API_KEY."""

from __future__ import annotations

from .openai_compat import OpenAICompatibleProvider


class CustomProvider(OpenAICompatibleProvider):
    kind = "openai-compatible"
    name = "custom"  # the seeded connection of this kind keeps the name today's model ids use
    display_name = "Custom OpenAI-compatible"
    # The seeded connection's URL when CUSTOM_BASE_URL is unset; a new connection of this kind must give one.
    default_base_url = "http://127.0.0.1:8000/v1"
    base_url_env_vars = ("CUSTOM_BASE_URL",)
    key_env_vars = ("CUSTOM_API_KEY",)
    needs_key = False
