"""``modaverse-web serve`` as a real process: flags and ``MODAVERSE_*`` settings, the port file, and the
SIGTERM drain (not ready at once, still answering, in-flight streams finish, exit code 0); and
``python -m modaverse_web`` runs the same CLI."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from tests.integration.processes import module_help, running

from .stack import Stack

SLOW = {
    "model": "modaverse",
    "messages": [{"role": "user", "content": "SLOW Modality: [TEXT] Prompt: " + "word " * 30}],
    "stream": True,
}


def test_serve_drains_on_sigterm(stack: Stack, tmp_path: Path) -> None:
    # The helper passes --port 0 and --port-file: the flag must beat MODAVERSE_PORT=1.
    env = {"MODAVERSE_DRAIN_DELAY_S": "3", "MODAVERSE_GRACE_PERIOD_S": "30", "MODAVERSE_PORT": "1"}
    with running("web", tmp_path, env, gateway=stack.gateway_target, timeout=60) as web:
        assert web.port not in (0, 1)  # the port file named the port --port 0 bound
        with httpx.Client(base_url=f"http://127.0.0.1:{web.port}", timeout=60) as http:
            assert http.get("/readyz").json() == {"status": "ready"}
            with http.stream("POST", "/v1/chat/completions", json=SLOW) as stream:
                lines = stream.iter_lines()
                assert next(lines).startswith("data: ")
                web.sigterm()
                for _ in range(200):  # not ready at once ...
                    if http.get("/readyz").status_code == 503:
                        break
                    time.sleep(0.01)
                assert http.get("/readyz").json() == {"status": "draining"}
                assert http.get("/healthz").status_code == 200  # ... but alive and still answering
                rest = [line for line in lines if line.startswith("data: ")]
            assert rest[-1] == "data: [DONE]"  # the in-flight stream ran to its end
            assert '"finish_reason":"stop"' in rest[-2]
        stopped = web.stop(60)
    assert stopped.code == 0
    assert "draining" in stopped.output
    assert "web stopped" in stopped.output


def test_python_dash_m_runs_the_cli() -> None:
    help_text = module_help("modaverse_web", "serve")
    assert "--port-file" in help_text and "--gateway" in help_text
