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
