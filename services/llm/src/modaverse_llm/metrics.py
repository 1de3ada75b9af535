"""LLM metrics (besides the runtime's per-RPC ones). Names are stable API."""

from __future__ import annotations

from prometheus_client import Counter

FINISHED = Counter("modaverse_llm_finished", "Generations ended, by finish reason", ["reason"])
TOKENS = Counter("modaverse_llm_completion_tokens", "Tokens generated")
