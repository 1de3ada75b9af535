"""Endpoint discovery: a target is ``host:port`` (static) or ``dns:///name:port`` (Kubernetes DNS).

A DNS target behind a headless Service resolves to every ready pod; its channel balances
over them with gRPC's round_robin policy. Several targets per route are balanced by the router.
"""

from __future__ import annotations

import grpc
from grpc import aio

_OPTIONS = [
    ("grpc.max_send_message_length", 64 * 2**20),
    ("grpc.max_receive_message_length", 64 * 2**20),
    ("grpc.lb_policy_name", "round_robin"),
    ("grpc.enable_retries", 0),  # retries are ours: on another replica, with backoff
    ("grpc.keepalive_time_ms", 30_000),
]


def open_channel(
    target: str, max_message_bytes: int | None = None, credentials: grpc.ChannelCredentials | None = None
) -> aio.Channel:
    options = list(_OPTIONS)
    if max_message_bytes:
        options[0] = ("grpc.max_send_message_length", max_message_bytes)
        options[1] = ("grpc.max_receive_message_length", max_message_bytes)
    if credentials is not None:
        return aio.secure_channel(target, credentials, options=options)
    return aio.insecure_channel(target, options=options)
