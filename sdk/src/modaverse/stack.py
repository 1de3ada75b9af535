"""``modaverse up``: the whole stack as separate local processes, like a cluster in miniature.

encoder, llm and one generator per modality start together on free loopback ports; the gateway
starts last on the public port with the routing table pointing at them. Ctrl-C (or SIGTERM)
stops the gateway first, then the rest, each with a graceful drain.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from .local import LocalService, service_executable

GENERATORS = {"image": "text-to-image", "video": "text-to-video", "audio": "text-to-audio"}


@dataclass
class Stack:
    gateway: LocalService
    services: dict[str, LocalService] = field(default_factory=dict)

    @property
    def target(self) -> str:
        return self.gateway.target

    def stop(self) -> None:
        self.gateway.stop()
        for service in self.services.values():
            service.stop()


def _backends(profile: str, log_dir: Path, env: dict[str, str]) -> dict[str, LocalService]:
    common = {"MODAVERSE_PROFILE": profile, **env}
    services = {
        "encoder": LocalService(service_executable("modaverse-encoder"), env=common, log_path=log_dir / "encoder.log"),
        "llm": LocalService(service_executable("modaverse-llm"), env=common, log_path=log_dir / "llm.log"),
    }
    for modality, kind in GENERATORS.items():
        services[f"gen-{modality}"] = LocalService(
            service_executable("modaverse-generator"),
            env={**common, "MODAVERSE_GENERATOR_KIND": kind},
            log_path=log_dir / f"gen-{modality}.log",
        )
    return services


def start_stack(
    profile: str = "tiny",
    gateway_port: int = 0,
    log_dir: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 600.0,
) -> Stack:
    """Start every service and wait until all are SERVING. Raises (after cleaning up) on failure."""
    logs = log_dir or Path(".modaverse/logs")
    logs.mkdir(parents=True, exist_ok=True)
    services = _backends(profile, logs, env or {})
    started: list[LocalService] = []
    try:
        for service in services.values():
            started.append(service.launch())
        for service in services.values():
            service.wait_ready(timeout)
        routes = {
            "generators": {
                f"{modality}-{profile}": {
                    "modality": modality,
                    "endpoints": [services[f"gen-{modality}"].target],
                    "default": True,
                }
                for modality in GENERATORS
            }
        }
        gateway_env = {
            **(env or {}),
            "MODAVERSE_ENCODER_TARGETS": services["encoder"].target,
            "MODAVERSE_LLM_TARGETS": services["llm"].target,
            "MODAVERSE_ROUTES": json.dumps(routes),
        }
        gateway = LocalService(
            service_executable("modaverse-gateway"), env=gateway_env, port=gateway_port, log_path=logs / "gateway.log"
        )
        started.append(gateway.launch())
        gateway.wait_ready(timeout)
    except BaseException:
        for service in reversed(started):
            service.stop()
        raise
    return Stack(gateway, services)


@contextmanager
def local_stack(**kwargs: object) -> Iterator[Stack]:
    stack = start_stack(**kwargs)  # type: ignore[arg-type]
    try:
        yield stack
    finally:
        stack.stop()


def run_stack(profile: str, gateway_port: int, log_dir: Path) -> int:
    """Foreground ``modaverse up``: start, report, wait for Ctrl-C/SIGTERM or a crash, stop."""
    print(f"starting the {profile} stack (logs in {log_dir}/) ...", file=sys.stderr)
    started = time.perf_counter()
    stack = start_stack(profile, gateway_port, log_dir)
    for name, service in stack.services.items():
        print(f"  {name:10s} {service.target}", file=sys.stderr)
    print(
        f"gateway on {stack.target}, all SERVING after {time.perf_counter() - started:.0f}s; Ctrl-C stops",
        file=sys.stderr,
    )
    stopping = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    code = 0
    while not stopping:
        dead = [
            n for n, s in [("gateway", stack.gateway), *stack.services.items()] if s.proc and s.proc.poll() is not None
        ]
        if dead:
            print(f"{', '.join(dead)} exited; stopping the stack (see {log_dir}/)", file=sys.stderr)
            code = 1
            break
        time.sleep(0.5)
    print("stopping ...", file=sys.stderr)
    stack.stop()
    return code
