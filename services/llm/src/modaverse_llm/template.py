"""The release's conversation template and added tokens (DESIGN §5)."""

from __future__ import annotations

MEDIA_START, MEDIA_END = "<Media>", "</Media>"
FLAGS = ("[TEXT]", "[IMAGE]", "[AUDIO]", "[VIDEO]")
ADDED_TOKENS = (MEDIA_START, MEDIA_END, *FLAGS)
HUMAN = "### Human:"
ASSISTANT = "\n### Assistant:"
DEFAULT_STOP = "###"
