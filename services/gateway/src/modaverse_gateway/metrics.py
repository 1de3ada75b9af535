"""Gateway metrics per route: what autoscalers of generators scaled to zero can wake on."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

INVOCATIONS_IN_FLIGHT = Gauge(
    "modaverse_gateway_invocations_in_flight", "Generator invocations the gateway is running, by route", ["route"]
)
INVOCATIONS = Counter(
    "modaverse_gateway_invocations_total",
    "Generator invocations by route and outcome (ok or a status code)",
    ["route", "outcome"],
)
CHATS_IN_FLIGHT = Gauge("modaverse_gateway_chats_in_flight", "Chats being answered")
ENCODER_CACHE = Counter(
    "modaverse_gateway_encoder_cache_total",
    "Distinct media items of chats by whether their encoder rows came from the cache (hit) or were encoded (miss)",
    ["result"],
)
ENCODER_CACHE_BYTES = Gauge("modaverse_gateway_encoder_cache_bytes", "Bytes of encoder rows the cache holds")
BUSY_WAITS = Counter(
    "modaverse_gateway_busy_waits_total",
    "Pauses of calls waiting for capacity after every replica of a service answered RESOURCE_EXHAUSTED, by service",
    ["service"],
)
