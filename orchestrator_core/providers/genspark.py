"""Genspark: no public API is documented. Treated as an OpenAI-compatible endpoint whose base URL
the operator sets (GENSPARK_BASE_URL); the default is its in-product proxy, which is unofficial."""

from __future__ import annotations

from .openai_compat import OpenAICompatibleProvider


class GensparkProvider(OpenAICompatibleProvider):
    kind = name = "genspark"
    display_name = "Genspark (unofficial, OpenAI-compatible)"
    # Unofficial: Genspark documents no public API; this is its in-product OpenAI-compatible proxy.
    default_base_url = "https://www.genspark.ai/api/llm_proxy/v1"
    base_url_env_vars = ("GENSPARK_BASE_URL",)
    key_env_vars = ("GENSPARK_API_KEY",)
    needs_key = True
