"""``python -m modaverse_llm`` = the ``modaverse-llm`` command."""

from .cli import main

main()
