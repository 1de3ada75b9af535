"""Endpoint discovery: a target is ``host:port`` (static) or ``dns:///name:port`` (Kubernetes DNS).

A DNS target behind a headless Service resolves to every ready pod; its channel balances
over them with gRPC's round_robin policy. Several targets per route are balanced by the router.
With ``MODAVERSE_DISCOVERY=kubernetes`` a target naming a Service is replaced by its ready endpoints, one
channel per pod address, followed through the Kubernetes API (kube_discovery.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from grpc import aio


@dataclass(frozen=True)
class ChannelConfig:
    max_message_bytes: int = 64 * 2**20
    credentials: grpc.ChannelCredentials | None = None
    # gRPC's default reconnect backoff grows to 120 s: a backend that came back after a long outage
    # would keep failing calls for up to two minutes. Capped, it is used again within this time.
    max_reconnect_backoff_ms: int = 1000


def open_channel(target: str, config: ChannelConfig, authority: str = "") -> aio.Channel:
    """``authority``: the name the backend is known by when ``target`` is one of its addresses (a pod's IP from
    Kubernetes discovery): sent as the ``:authority`` and, over TLS, the name its certificate must hold."""
    options: list[tuple[str, str | int]] = [
        ("grpc.max_send_message_length", config.max_message_bytes),
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.lb_policy_name", "round_robin"),
        ("grpc.enable_retries", 0),  # retries are ours: on another replica, with backoff
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.initial_reconnect_backoff_ms", min(200, config.max_reconnect_backoff_ms)),
        ("grpc.min_reconnect_backoff_ms", min(200, config.max_reconnect_backoff_ms)),
        ("grpc.max_reconnect_backoff_ms", config.max_reconnect_backoff_ms),
    ]
    if authority:
        options.append(("grpc.default_authority", authority))
    if config.credentials is not None:
        return aio.secure_channel(target, config.credentials, options=options)
    return aio.insecure_channel(target, options=options)
