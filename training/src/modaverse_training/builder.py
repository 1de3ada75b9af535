"""Synthesising I/O-alignment instruction data from captioned media.

Input: caption files in the style of COCO / AudioCaps / WebVid — one media file and its caption
per line, ``path<TAB>caption`` (or ``path,caption`` as CSV), paths relative to the caption file.
Output: :class:`~modaverse_training.schema.Example` records of the three kinds the paper names:

- **input** alignment: describe the given media → ``[TEXT]`` with its caption;
- **output** alignment: asked for a modality, write a generator prompt → ``[IMAGE]/[AUDIO]/[VIDEO]``
  with the caption as the prompt (no media in);
- **reasoning** across both: media in, another modality out (``turn this sound into a picture``)
  → that modality with the input's caption as the prompt.

The mix is given as weights (default input 0.4, output 0.4, reasoning 0.2); the same seed gives
the same dataset, byte for byte.

Held-out combinations (:class:`HeldOutCombos`): for every caption and every template list one
template is kept for the test split, so a test instruction pairs a caption (a colour × shape) with a
wording that training and validation never paired it with; every caption still trains with the other
wordings.
"""

from __future__ import annotations

import csv
import hashlib
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .schema import MEDIA_KINDS, DataError, Example, Invocation, MediaRef

DEFAULT_MIX = {"input": 0.4, "output": 0.4, "reasoning": 0.2}

DESCRIBE = {
    "image": ["What is in this image?", "Describe this image.", "What do you see here?", "What does the picture show?"],
    "audio": [
        "What is this sound?",
        "Describe this audio.",
        "What do you hear?",
        "What does the recording sound like?",
    ],
    "video": [
        "What happens in this video?",
        "Describe this video.",
        "What does the clip show?",
        "What is in this video?",
    ],
}
CREATE = {
    "image": ["Draw {c}.", "Generate an image of {c}.", "Show me a picture of {c}.", "Paint {c}."],
    "audio": ["Make the sound of {c}.", "Generate audio of {c}.", "Let me hear {c}.", "Play {c}."],
    "video": ["Make a video of {c}.", "Generate a clip of {c}.", "Animate {c}.", "Show me a video of {c}."],
}
CONVERT = {
    "image": ["Draw a picture of this.", "Turn this into an image.", "Make an image that matches this."],
    "audio": ["Make a sound that matches this.", "Turn this into audio.", "What would this sound like? Play it."],
    "video": ["Turn this into a video.", "Animate this.", "Make a short clip of this."],
}


Side = Literal["all", "train", "test"]


@dataclass(frozen=True)
class HeldOutCombos:
    """Which (caption, template) combinations belong to the test split: for each caption and template
    family (``describe/image``, ``create/audio``, ``convert/video`` …) one template index, chosen by a hash
    of the seed, family and caption (stable across runs, Python versions and machines)."""

    seed: int = 0

    def test_template(self, family: str, caption: str, count: int) -> int:
        digest = hashlib.sha256(f"{self.seed}|{family}|{caption}".encode()).digest()
        return int.from_bytes(digest[:4], "big") % count

    def templates(self, family: str, caption: str, templates: list[str], side: Side) -> list[str]:
        """The templates ``side`` may pair ``caption`` with: all of them, all but the held-out one, or it alone."""
        if side == "all" or len(templates) < 2:
            return templates
        held = self.test_template(family, caption, len(templates))
        if side == "test":
            return [templates[held]]
        return [t for i, t in enumerate(templates) if i != held]


@dataclass(frozen=True)
class CaptionedMedia:
    kind: str
    path: str
    caption: str


def read_captions(path: Path, kind: str) -> list[CaptionedMedia]:
    """Read a caption file; errors name the line. Paths are made relative to ``path``'s folder."""
    if kind not in MEDIA_KINDS:
        raise DataError(f"{path}: kind {kind!r} is not one of {MEDIA_KINDS}")
    items = []
    with path.open(encoding="utf-8", newline="") as handle:
        for number, line in enumerate(handle, start=1):
            text = line.rstrip("\n")
            if not text.strip() or text.lstrip().startswith("#"):
                continue
            if "\t" in text:
                media, _, caption = text.partition("\t")
            else:
                row = next(csv.reader([text]))
                if len(row) < 2:
                    raise DataError(f"{path}:{number}: expected 'path<TAB>caption' or 'path,caption'")
                media, caption = row[0], ",".join(row[1:])
            media, caption = media.strip(), " ".join(caption.split())
            if not media or not caption:
                raise DataError(f"{path}:{number}: empty path or caption")
            items.append(CaptionedMedia(kind, media, caption))
    return items


def _sentence(caption: str) -> str:
    return caption[0].upper() + caption[1:] + ("" if caption.endswith(".") else ".")


def build_examples(
    items: list[CaptionedMedia],
    count: int,
    *,
    mix: dict[str, float] | None = None,
    seed: int = 0,
    id_prefix: str = "ex",
    combos: HeldOutCombos | None = None,
    side: Side = "all",
) -> list[Example]:
    """``count`` examples drawn from ``items`` with the given task mix (deterministic in ``seed``). With
    ``combos``, ``side`` "train" never uses a held-out (caption, template) combination and "test" only those."""
    weights = mix or DEFAULT_MIX
    held = combos or HeldOutCombos()

    def wording(family: str, kind: str, caption: str, table: dict[str, list[str]]) -> str:
        return rng.choice(held.templates(f"{family}/{kind}", caption, table[kind], side if combos else "all"))

    if not items:
        raise DataError("no captioned media to build from")
    unknown = set(weights) - set(DEFAULT_MIX)
    if unknown or not any(w > 0 for w in weights.values()):
        raise DataError(f"mix must weigh some of {sorted(DEFAULT_MIX)}; got {weights}")
    rng = random.Random(seed)
    tasks, task_weights = zip(*[(t, w) for t, w in weights.items() if w > 0], strict=True)
    examples = []
    for index in range(count):
        task = rng.choices(tasks, task_weights)[0]
        item = rng.choice(items)
        if task == "input":
            ex = Example(
                wording("describe", item.kind, item.caption, DESCRIBE),
                (MediaRef(item.kind, item.path),),
                (Invocation("text", _sentence(item.caption)),),
            )
        elif task == "output":
            target = rng.choice(MEDIA_KINDS)
            template = wording("create", target, item.caption, CREATE)
            ex = Example(template.format(c=item.caption), (), (Invocation(target, item.caption),))
        else:
            target = rng.choice([k for k in MEDIA_KINDS if k != item.kind])
            ex = Example(
                wording("convert", target, item.caption, CONVERT),
                (MediaRef(item.kind, item.path),),
                (Invocation(target, item.caption),),
            )
        examples.append(Example(ex.instruction, ex.media, ex.meta_response, task, f"{id_prefix}-{index:06d}"))
    return examples
