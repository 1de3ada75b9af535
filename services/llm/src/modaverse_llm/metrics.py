"""LLM metrics (besides the runtime's per-RPC ones). Names are stable API."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

FINISHED = Counter("modaverse_llm_finished", "Generations ended, by finish reason", ["reason"])
TOKENS = Counter("modaverse_llm_completion_tokens", "Tokens generated")
RUNNING_ROWS = Gauge("modaverse_llm_running_rows", "Requests decoding in the batch now (transformers backend)")
KV_POSITIONS = Gauge(
    "modaverse_llm_kv_positions", "KV-cache positions (per layer) held by the running batch (transformers backend)"
)
