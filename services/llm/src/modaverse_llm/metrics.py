"""LLM metrics (besides the runtime's per-RPC ones). Names are stable API."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

FINISHED = Counter("modaverse_llm_finished", "Generations ended, by finish reason", ["reason"])
TOKENS = Counter("modaverse_llm_completion_tokens", "Tokens generated")
RUNNING_ROWS = Gauge("modaverse_llm_running_rows", "Requests decoding in the batch now (transformers backend)")
KV_POSITIONS = Gauge(
    "modaverse_llm_kv_positions", "KV-cache positions (per layer) held by the running batch (transformers backend)"
)
STEP_ROWS = Histogram(
    "modaverse_llm_step_rows",
    "Rows in each decode step's model call (transformers backend); its mean is the batch's occupancy",
    buckets=(1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 128, 256),
)
PREFILLS = Counter(
    "modaverse_llm_prefills", "Prefills: model calls that join waiting requests to the batch (transformers backend)"
)
