"""``python -m modaverse_encoder`` = the ``modaverse-encoder`` command."""

from .cli import main

main()
