"""Any OpenAI-compatible endpoint (vLLM, a gateway, a proxy): CUSTOM_BASE_URL, optional CUSTOM_API_KEY."""

from __future__ import annotations

from .openai_compat import OpenAICompatibleProvider


class CustomProvider(OpenAICompatibleProvider):
    name = "custom"
    display_name = "Custom OpenAI-compatible"
    needs_key = False
    key_env_var = "CUSTOM_API_KEY"
