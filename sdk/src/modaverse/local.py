"""Running ModaVerse services as local processes (the demo, tests, and `modaverse up`)."""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


class ServicesNotInstalled(RuntimeError):
    """The services' commands (``modaverse-encoder`` …) are not installed: the SDK alone only talks to a
    gateway that runs elsewhere."""

    def __init__(self, missing: Sequence[str]) -> None:
        self.missing = list(missing)
        super().__init__(
            f"running the stack locally needs the ModaVerse services, and {', '.join(self.missing)} "
            f"{'is' if len(self.missing) == 1 else 'are'} not installed. The SDK (`pip install ./protos ./sdk`) "
            "only talks to a running gateway (`modaverse chat --target HOST:PORT`). To run the services here, "
            "install the whole stack from a clone of the repository: `make install` (torch, diffusers, "
            "ImageBind …; see the README)."
        )


def find_service_executable(name: str) -> str | None:
    """The console script ``name``, preferring the one beside the running interpreter; None if absent."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else shutil.which(name)


def service_executable(name: str) -> str:
    """The console script ``name`` (see :func:`find_service_executable`); the bare name if not found."""
    return find_service_executable(name) or name


def require_services(names: Sequence[str]) -> None:
    """Raise :class:`ServicesNotInstalled` naming every command of ``names`` that is not installed."""
    missing = [name for name in names if find_service_executable(name) is None]
    if missing:
        raise ServicesNotInstalled(missing)


class LocalService:
    """``<exe> serve --port N --port-file F`` in a child process (N=0: any free port)."""

    def __init__(
        self,
        executable: str,
        *,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        log_path: Path | None = None,
    ) -> None:
        self.executable = executable
        self.args = list(args)
        self.env = {**os.environ, **(env or {})}
        self.host = host
        self.log_path = log_path
        self.requested_port = port
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._tmp = tempfile.TemporaryDirectory(prefix="modaverse-")
        self._log: IO[bytes] | None = None

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"

    def launch(self) -> LocalService:
        """Spawn the process (does not wait); see :meth:`wait_ready`."""
        self._port_file = Path(self._tmp.name) / "port"
        self._log_path = self.log_path or Path(self._tmp.name) / "server.log"
        self._log = self._log_path.open("wb")
        port = str(self.requested_port)
        cmd = [self.executable, "serve", "--host", self.host, "--port", port, "--port-file", str(self._port_file)]
        self.proc = subprocess.Popen([*cmd, *self.args], env=self.env, stdout=self._log, stderr=subprocess.STDOUT)
        return self

    def wait_ready(self, timeout: float = 300.0) -> LocalService:
        """Wait until the port is bound and health says SERVING."""
        deadline = time.monotonic() + timeout
        while not (self._port_file.exists() and self._port_file.read_text().strip()):
            self._check_alive(self._log_path)
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.executable} did not bind a port within {timeout:.0f}s")
            time.sleep(0.05)
        self.port = int(self._port_file.read_text())
        self.wait_serving(deadline - time.monotonic(), self._log_path)
        return self

    def start(self, timeout: float = 300.0) -> LocalService:
        return self.launch().wait_ready(timeout)

    def _check_alive(self, log_path: Path) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-4000:] if log_path.exists() else ""
            raise RuntimeError(f"{self.executable} exited with {self.proc.returncode}:\n{tail}")

    def wait_serving(self, timeout: float, log_path: Path) -> None:
        deadline = time.monotonic() + max(timeout, 0.0)
        with grpc.insecure_channel(self.target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while True:
                self._check_alive(log_path)
                try:
                    reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.executable} did not become SERVING")
                time.sleep(0.2)

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM (graceful drain), then SIGKILL after ``timeout``. Returns the exit code."""
        code = 0
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                code = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                code = self.proc.wait()
        elif self.proc is not None:
            code = self.proc.returncode
        if self._log is not None:
            self._log.close()
        self._tmp.cleanup()
        return code

    def __enter__(self) -> LocalService:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class LocalWebService(LocalService):
    """The web front door (``modaverse-web serve``, HTTP) in a child process; ready when ``GET /readyz`` answers
    200. ``gateway``: the gateway's HOST:PORT it calls."""

    READY_PATH = "/readyz"

    def __init__(
        self,
        executable: str,
        *,
        gateway: str,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        log_path: Path | None = None,
    ) -> None:
        super().__init__(
            executable, args=["--gateway", gateway, *args], env=env, host=host, port=port, log_path=log_path
        )
        self.gateway = gateway

    @property
    def url(self) -> str:
        """The playground's address (the API is under ``/v1``)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def ready(self) -> bool:
        """One ``GET /readyz`` (no proxy: the service is on this machine)."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=1.0)
        try:
            conn.request("GET", self.READY_PATH)
            return conn.getresponse().status == 200
        except OSError:
            return False
        finally:
            conn.close()

    def wait_serving(self, timeout: float, log_path: Path) -> None:
        deadline = time.monotonic() + max(timeout, 0.0)
        while True:
            self._check_alive(log_path)
            if self.ready():
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.executable} did not answer {self.READY_PATH} with 200")
            time.sleep(0.1)
