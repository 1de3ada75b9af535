"""Prometheus metrics shared by all servers, served over HTTP on ``metrics_port``.

Names are stable API: the Helm chart's autoscalers (KEDA/HPA) key on them.
"""

from __future__ import annotations

import logging

from prometheus_client import Counter, Gauge, Histogram, start_http_server

log = logging.getLogger(__name__)

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

REQUESTS = Counter("modaverse_requests_total", "RPCs handled, by method and final status code", ["method", "code"])
LATENCY = Histogram("modaverse_request_seconds", "RPC wall time, by method", ["method"], buckets=_LATENCY_BUCKETS)
IN_FLIGHT = Gauge("modaverse_requests_in_flight", "RPCs being handled now")
QUEUE_DEPTH = Gauge("modaverse_queue_depth", "Work items waiting for a model, by queue", ["queue"])
BATCH_SIZE = Histogram(
    "modaverse_batch_size",
    "Items per model call, by queue",
    ["queue"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)
MODEL_READY = Gauge("modaverse_model_ready", "1 when the models are loaded and serving")


def start_metrics_server(port: int) -> int:
    """Serve /metrics on ``port`` (0 = off). Returns the bound port, or 0."""
    if port <= 0:
        return 0
    server, _thread = start_http_server(port)
    bound: int = server.server_address[1]
    log.info("metrics on http://0.0.0.0:%d/metrics", bound)
    return bound
