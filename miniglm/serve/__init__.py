"""Serving: the OpenAI-compatible API, the web chat and the arena."""
