"""Genspark: no public API is documented. Treated as an OpenAI-compatible endpoint whose base URL
the operator sets (GENSPARK_BASE_URL); the default is its in-product proxy, which is unofficial."""

from __future__ import annotations

from .openai_compat import OpenAICompatibleProvider


class GensparkProvider(OpenAICompatibleProvider):
    name = "genspark"
    display_name = "Genspark (unofficial, OpenAI-compatible)"
    needs_key = True
    key_env_var = "GENSPARK_API_KEY"
