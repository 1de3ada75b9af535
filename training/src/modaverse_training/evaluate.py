"""Held-out evaluation through the serving decode path.

Prompts are built by the LLM service's PromptBuilder and decoded by its own batched loop
(``modaverse_llm.engine.decode_batch``: greedy, stop at ``###``), and the output is parsed by the
gateway's parser, so a score here is what the served model would get.

- routing: the parsed modalities (media invocations in order, plus ``text`` when there is a text
  answer) equal the target's;
- exact: additionally every prompt/answer equals the target's (whitespace-normalised, case-folded);
- token F1: word-overlap F1 between predicted and target prompt text (SQuAD style);
- describe: for held-out images asked to be described, the answer names the right colour *and* shape.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from modaverse_gateway.metaresponse import ParsedResponse, parse_meta_response
from modaverse_llm.engine import PEFT_BASE, Job, ModelHandle, decode_batch
from modaverse_llm.prompt import PromptBuilder
from modaverse_llm.types import SamplingParams

from .data import user_message
from .model import ModaVerseModel
from .schema import Example

_WORD = re.compile(r"[a-z0-9]+")


@dataclass(frozen=True)
class EvalResult:
    count: int
    routing: float
    exact: float
    token_f1: float
    describe: float  # colour+shape correct on image descriptions (nan-free: 0 when none)
    describe_count: int
    samples: tuple[tuple[str, str], ...]  # (target, prediction), a few for the log
    # Shapes-world captions ("a red circle"): the caption's first / last content word alone.
    describe_colour: float = 0.0
    describe_shape: float = 0.0

    def as_dict(self) -> dict[str, float | int]:
        return {
            "count": self.count,
            "routing": self.routing,
            "exact": self.exact,
            "token_f1": self.token_f1,
            "describe": self.describe,
            "describe_count": self.describe_count,
            "describe_colour": self.describe_colour,
            "describe_shape": self.describe_shape,
        }


def routes(parsed: ParsedResponse) -> list[str]:
    return [i.modality.value for i in parsed.invocations] + (["text"] if parsed.answer else [])


def prompts(parsed: ParsedResponse) -> list[str]:
    texts = [i.prompt for i in parsed.invocations] + ([parsed.answer] if parsed.answer else [])
    return [" ".join(t.lower().split()).rstrip(".") for t in texts]


def token_f1(pred: str, gold: str) -> float:
    p, g = _WORD.findall(pred.lower()), _WORD.findall(gold.lower())
    common = sum((Counter(p) & Counter(g)).values())
    if not p or not g or not common:
        return float(not p and not g)
    precision, recall = common / len(p), common / len(g)
    return 2 * precision * recall / (precision + recall)


def _content(text: str) -> list[str]:
    return [w for w in _WORD.findall(text.lower()) if w not in {"a", "an", "the"}]


def describes(answer: str, caption: str) -> bool:
    """Does the answer name the caption's colour and shape ("a red circle" → red … circle)?"""
    words = set(_content(answer))
    return all(w in words for w in _content(caption))


@torch.no_grad()
def generate(
    model: ModaVerseModel,
    examples: Sequence[Example],
    vectors: Sequence[torch.Tensor],
    max_tokens: int = 32,
    batch_size: int = 32,
) -> list[str]:
    """Greedy meta-responses; ``vectors[i]`` holds example i's ImageBind vectors (items, embed_dim)."""
    was_training = model.training
    model.eval()
    device = model.features.device
    builder = PromptBuilder(model.tokenizer)
    context = int(model.llm.config.max_position_embeddings)
    handle = ModelHandle(
        model=model.llm,
        embed=model.llm.get_input_embeddings(),
        decode=lambda ids: str(model.tokenizer.decode(ids, skip_special_tokens=True)),
        eos={int(model.tokenizer.eos_token_id)},
        device=device,
        dtype=next(model.llm.parameters()).dtype,
        context_length=context,
        uses_peft=False,  # the active adapter is the trained one; no per-row names needed
    )
    sampling = SamplingParams(max_tokens=max_tokens, temperature=0.0, seed=0)
    out: list[str] = []
    for start in range(0, len(examples), batch_size):
        jobs = []
        for ex, vec in zip(examples[start : start + batch_size], vectors[start : start + batch_size], strict=True):
            rows = [model.project(m.kind, v[None].to(device))[0] for m, v in zip(ex.media, vec, strict=True)]
            prompt = builder.build([user_message(ex, rows)], context, max_tokens)
            jobs.append(Job(prompt, sampling, PEFT_BASE, lambda _delta: None))
        out += [c.text for c in decode_batch(handle, jobs)]
    model.train(was_training)
    return out


def score(examples: Sequence[Example], predictions: Sequence[str], samples: int = 4) -> EvalResult:
    routing = exact = f1 = 0.0
    described = describe_total = colour = shape = 0
    for ex, pred in zip(examples, predictions, strict=True):
        got, want = parse_meta_response(pred), parse_meta_response(ex.target_text())
        routed = routes(got) == routes(want)
        routing += routed
        exact += routed and prompts(got) == prompts(want)
        f1 += token_f1(" ".join(prompts(got)), " ".join(prompts(want)))
        if ex.task == "input" and [m.kind for m in ex.media] == ["image"]:
            describe_total += 1
            caption, words = _content(ex.meta_response[0].prompt), set(_content(got.answer))
            described += describes(got.answer, ex.meta_response[0].prompt)
            colour += bool(caption) and caption[0] in words
            shape += bool(caption) and caption[-1] in words
    n = max(len(examples), 1)
    pairs = tuple((ex.target_text(), p) for ex, p in list(zip(examples, predictions, strict=True))[:samples])
    d = max(describe_total, 1)
    return EvalResult(
        len(examples), routing / n, exact / n, f1 / n, described / d, describe_total, pairs, colour / d, shape / d
    )


def evaluate(
    model: ModaVerseModel, examples: Sequence[Example], vectors: Sequence[torch.Tensor], max_tokens: int = 32
) -> EvalResult:
    return score(examples, generate(model, examples, vectors, max_tokens))


def example_vectors(index: Sequence[Sequence[int]], table: torch.Tensor) -> list[torch.Tensor]:
    return [table[list(i)] if i else table.new_zeros(0, table.shape[1]) for i in index]


__all__ = ["EvalResult", "Path", "evaluate", "example_vectors", "generate", "score", "token_f1"]
