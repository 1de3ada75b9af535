"""Prometheus metrics of the web front door, served at ``/metrics`` (and on ``metrics_port`` when set)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

REQUESTS = Counter(
    "modaverse_web_requests_total", "HTTP requests handled, by route and final status", ["route", "status"]
)
LATENCY = Histogram(
    "modaverse_web_request_seconds", "HTTP request wall time until the last byte, by route", ["route"], buckets=_BUCKETS
)
IN_FLIGHT = Gauge("modaverse_web_requests_in_flight", "API calls being answered now")
CANCELLED = Counter(
    "modaverse_web_cancelled_total", "API calls whose client went away before the answer was complete", ["route"]
)
FILES = Gauge("modaverse_web_files", "Generated media files kept for /v1/files")
FILE_BYTES = Gauge("modaverse_web_file_bytes", "Bytes of generated media kept for /v1/files")
PEER_FILES = Counter(
    "modaverse_web_peer_file_lookups_total",
    "Files this replica lacked and asked its peers for (MODAVERSE_FILE_PEERS), by outcome",
    ["result"],
)
READY = Gauge("modaverse_web_ready", "1 while serving, 0 while draining on SIGTERM")
