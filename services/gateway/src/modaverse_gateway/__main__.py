"""``python -m modaverse_gateway`` = the ``modaverse-gateway`` command."""

from .cli import main

main()
