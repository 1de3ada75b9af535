"""``modaverse up``: the whole stack as separate local processes, like a cluster in miniature.

encoder, llm and the generators (one per route: text-to-image, image-to-image, text-to-video,
text-to-audio) start together on free loopback ports; the gateway starts last on the public port with
the routing table pointing at them; then, when its package is
installed (``modaverse-web``), the web front door (the playground and the OpenAI-compatible API) in front
of the gateway. Ctrl-C (or SIGTERM) stops the web front door and the gateway first, then the rest, each
with a graceful drain.
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

from . import local
from .local import LocalService, LocalWebService, require_services, service_executable

# Route (named "<route>-<profile>") → (modality, generator kind). The first route of a modality is its default,
# the one a meta-response's `Modality: [IMAGE]` reaches; the others are reached by name (direct generation).
GENERATORS = {
    "image": ("image", "text-to-image"),
    "image-to-image": ("image", "image-to-image"),
    "video": ("video", "text-to-video"),
    "audio": ("audio", "text-to-audio"),
}
SERVICE_COMMANDS = ("modaverse-encoder", "modaverse-llm", "modaverse-generator", "modaverse-gateway")
# Optional: started when installed (`pip install ./services/web`, or `make install`).
WEB_COMMAND = "modaverse-web"
WEB_PORT = 8080


@dataclass
class Stack:
    gateway: LocalService
    services: dict[str, LocalService] = field(default_factory=dict)
    web: LocalWebService | None = None
    # Why there is no web front door when one was asked for (not installed, or it did not start).
    web_skipped: str = ""

    @property
    def target(self) -> str:
        return self.gateway.target

    @property
    def web_url(self) -> str | None:
        return self.web.url if self.web is not None else None

    def processes(self) -> dict[str, LocalService]:
        """Every running service by name, the front ones first."""
        front: dict[str, LocalService] = {"web": self.web} if self.web is not None else {}
        return {**front, "gateway": self.gateway, **self.services}

    def stop(self) -> None:
        for service in self.processes().values():
            service.stop()


def web_installed() -> bool:
    return local.find_service_executable(WEB_COMMAND) is not None


def start_web(
    gateway: str, port: int, log_dir: Path, env: dict[str, str] | None = None, timeout: float = 60.0
) -> tuple[LocalWebService | None, str]:
    """The web front door in front of ``gateway``: (service, "") once it answers ``/readyz``, or (None, why not)
    when ``modaverse-web`` is not installed or does not start (it is optional: the stack runs without it)."""
    if not web_installed():
        return None, f"{WEB_COMMAND} is not installed (pip install ./services/web, or make install)"
    log_path = log_dir / "web.log"
    web = LocalWebService(service_executable(WEB_COMMAND), gateway=gateway, env=env, port=port, log_path=log_path)
    try:
        web.start(timeout)
    except (RuntimeError, TimeoutError, OSError) as exc:
        web.stop()
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]
        return None, f"it did not start ({lines[-1]}; see {log_path})"  # the last line of its log, usually why
    return web, ""


def _backends(profile: str, log_dir: Path, env: dict[str, str]) -> dict[str, LocalService]:
    common = {"MODAVERSE_PROFILE": profile, **env}
    services = {
        "encoder": LocalService(service_executable("modaverse-encoder"), env=common, log_path=log_dir / "encoder.log"),
        "llm": LocalService(service_executable("modaverse-llm"), env=common, log_path=log_dir / "llm.log"),
    }
    for name, (_, kind) in GENERATORS.items():
        services[f"gen-{name}"] = LocalService(
            service_executable("modaverse-generator"),
            env={**common, "MODAVERSE_GENERATOR_KIND": kind},
            log_path=log_dir / f"gen-{name}.log",
        )
    return services


def routing_table(services: dict[str, LocalService], profile: str) -> dict[str, object]:
    """The gateway's routes to the generators of ``services``: ``<route>-<profile>``, a modality's first the default."""
    generators: dict[str, object] = {}
    defaults: set[str] = set()
    for name, (modality, _) in GENERATORS.items():
        generators[f"{name}-{profile}"] = {
            "modality": modality,
            "endpoints": [services[f"gen-{name}"].target],
            "default": modality not in defaults,
        }
        defaults.add(modality)
    return {"generators": generators}


def start_stack(
    profile: str = "tiny",
    gateway_port: int = 0,
    log_dir: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 600.0,
    web_port: int | None = None,
) -> Stack:
    """Start every service and wait until all are SERVING. Raises (after cleaning up) on failure;
    :class:`~modaverse.local.ServicesNotInstalled` before starting anything if a service is not installed.
    ``web_port``: also start the web front door on this port (0: any free one) when ``modaverse-web`` is
    installed; None: not at all. It is optional: ``Stack.web_skipped`` says why it is absent."""
    require_services(SERVICE_COMMANDS)
    logs = log_dir or Path(".modaverse/logs")
    logs.mkdir(parents=True, exist_ok=True)
    services = _backends(profile, logs, env or {})
    started: list[LocalService] = []
    try:
        for service in services.values():
            started.append(service.launch())
        for service in services.values():
            service.wait_ready(timeout)
        gateway_env = {
            **(env or {}),
            "MODAVERSE_ENCODER_TARGETS": services["encoder"].target,
            "MODAVERSE_LLM_TARGETS": services["llm"].target,
            "MODAVERSE_ROUTES": json.dumps(routing_table(services, profile)),
        }
        gateway = LocalService(
            service_executable("modaverse-gateway"), env=gateway_env, port=gateway_port, log_path=logs / "gateway.log"
        )
        started.append(gateway.launch())
        gateway.wait_ready(timeout)
        web, skipped = (None, "") if web_port is None else start_web(gateway.target, web_port, logs, env)
    except BaseException:
        for service in reversed(started):
            service.stop()
        raise
    return Stack(gateway, services, web, skipped)


@contextmanager
def local_stack(**kwargs: object) -> Iterator[Stack]:
    stack = start_stack(**kwargs)  # type: ignore[arg-type]
    try:
        yield stack
    finally:
        stack.stop()


def web_lines(stack: Stack) -> list[str]:
    """What to tell the user about the web front door."""
    if stack.web is not None:
        return [f"playground: {stack.web.url}  (OpenAI-compatible API: {stack.web.url}v1)"]
    if stack.web_skipped:
        return [f"playground: skipped, {stack.web_skipped}"]
    return []


def run_stack(profile: str, gateway_port: int, log_dir: Path, web_port: int | None = WEB_PORT) -> int:
    """Foreground ``modaverse up``: start, report, wait for Ctrl-C/SIGTERM or a crash, stop."""
    require_services(SERVICE_COMMANDS)  # before saying anything is starting
    print(f"starting the {profile} stack (logs in {log_dir}/) ...", file=sys.stderr)
    started = time.perf_counter()
    stack = start_stack(profile, gateway_port, log_dir, web_port=web_port)
    for name, service in stack.services.items():
        print(f"  {name:10s} {service.target}", file=sys.stderr)
    print(
        f"gateway on {stack.target}, all SERVING after {time.perf_counter() - started:.0f}s; Ctrl-C stops",
        file=sys.stderr,
    )
    for line in web_lines(stack):
        print(line, file=sys.stderr)
    stopping = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    code = 0
    while not stopping:
        dead = [n for n, s in stack.processes().items() if s.proc and s.proc.poll() is not None]
        if dead:
            print(f"{', '.join(dead)} exited; stopping the stack (see {log_dir}/)", file=sys.stderr)
            code = 1
            break
        time.sleep(0.5)
    print("stopping ...", file=sys.stderr)
    stack.stop()
    return code
