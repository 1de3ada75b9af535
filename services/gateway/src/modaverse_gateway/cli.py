"""``modaverse-gateway serve``."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from modaverse_runtime.cli import run_service_cli

from .service import make_spec
from .settings import GatewaySettings


def main(argv: Sequence[str] | None = None) -> None:
    sys.exit(run_service_cli("modaverse-gateway", GatewaySettings, make_spec, None, argv))
