"""The release's conversation template and added tokens (xinke-wang/ModaVerse, docs/architecture.md).

``assets/prompts/prompt_template.txt`` of the release, filled by string replacement:
``### Human: {media} {instruction}\\n### Assistant:``. The training target is the meta-response
followed by ``" " + "###"`` (the decoded stopping token 835 of LLaMA's vocabulary).
"""

from __future__ import annotations

MEDIA_START, MEDIA_END = "<Media>", "</Media>"
FLAGS = ("[TEXT]", "[IMAGE]", "[AUDIO]", "[VIDEO]")
# Added by the release in this order after the base vocabulary: ids V .. V+5.
ADDED_TOKENS = (MEDIA_START, MEDIA_END, *FLAGS)
PROMPT_TEMPLATE = "### Human: {media} {instruction}\n### Assistant:"
HUMAN = "### Human: "  # the template before {media}
ASSISTANT = "\n### Assistant:"  # the template after {instruction}
DEFAULT_STOP = "###"
# Bumped whenever the token sequence built for a conversation changes: a model trained by us
# (training/) records it, and a stale export is retrained rather than served a prompt it never saw.
PROMPT_FORMAT = "release-v1"
