"""The batched sampler against the per-row reference (``sampling.choose_token``): the same greedy
tokens, the same distributions, and a row's token independent of the rest of the batch."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from modaverse_llm.engine import batch_logprobs, position_logprobs
from modaverse_llm.sampler import CANDIDATES, BatchSampler
from modaverse_llm.sampling import choose_token, token_probabilities
from modaverse_llm.types import SamplingParams

CPU = torch.device("cpu")
OK = SamplingParams()
SEEN = [3, 4, 4, 9]  # the prompt's ids a penalty applies to (duplicates as prompts have them)

# Each exercises another path: a nucleus inside the candidates, a top-k inside them, a top-k beyond
# them (full sort), no top-k and top_p 1 (full sort), a flat nucleus wider than the candidates.
CASES = {
    "release defaults": OK,
    "nucleus 0.9, T 0.7": replace(OK, top_p=0.9, temperature=0.7),
    "top_k 5": replace(OK, top_k=5, top_p=1.0),
    "top_k beyond the candidates": replace(OK, top_k=CANDIDATES + 36, top_p=1.0, temperature=3.0),
    "everything": replace(OK, top_p=1.0, temperature=2.0),
    "penalty, top_k 20, top_p 0.8": replace(OK, top_k=20, top_p=0.8, repetition_penalty=1.7),
    "penalty below 1": replace(OK, top_p=0.95, repetition_penalty=0.6),
}


def logits_for(vocab: int, seed: int, peak: float = 3.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    out = torch.randn(vocab, generator=g) * peak
    out[SEEN[0]] = out.max() + 1.0  # a seen token is the favourite: the penalty matters
    return out


def implied_distribution(logits: torch.Tensor, p: SamplingParams, grid: int = 4000) -> torch.Tensor:
    """What the sampler draws, read off by sweeping the uniform number over [0, 1)."""
    sampler = BatchSampler(logits.numel(), CPU)
    sampler.add([p] * grid, [SEEN] * grid)
    tokens = sampler.sample(logits.expand(grid, -1), (torch.arange(grid) + 0.5) / grid)
    return torch.bincount(tokens, minlength=logits.numel()).float() / grid


@pytest.mark.parametrize("vocab", [40, 200])  # below and above the candidates
@pytest.mark.parametrize("name", list(CASES))
def test_the_distribution_is_the_references(vocab: int, name: str) -> None:
    p = CASES[name]
    for seed in range(3):
        logits = logits_for(vocab, seed, peak=[0.5, 3.0, 8.0][seed])  # flat to peaked
        want = token_probabilities(logits, p, SEEN)
        want = want / want.sum()
        got = implied_distribution(logits, p)
        assert (got - want).abs().max() < 1e-3, (name, seed, float((got - want).abs().max()))


@pytest.mark.parametrize("vocab", [40, 200])
def test_greedy_rows_are_the_references_argmax(vocab: int) -> None:
    rows = [replace(OK, temperature=0.0), replace(OK, top_k=1), replace(OK, temperature=0.0, repetition_penalty=3.0)]
    sampler = BatchSampler(vocab, CPU)
    sampler.add(rows, [SEEN] * len(rows))
    for seed in range(20):
        logits = torch.stack([logits_for(vocab, seed * 3 + i) for i in range(len(rows))])
        got = sampler.sample(logits, torch.rand(len(rows))).tolist()
        assert got == [choose_token(logits[i], p, SEEN, None) for i, p in enumerate(rows)]


def test_a_rows_token_does_not_depend_on_the_rest_of_the_batch() -> None:
    """Rows that force the slower paths (a wide top-k, top_p 1) change nothing for the others."""
    vocab = 300
    params = [replace(p, seed=i) for i, p in enumerate(CASES.values())] + [replace(OK, temperature=0.0)]
    together = BatchSampler(vocab, CPU)
    together.add(params, [SEEN] * len(params))
    alone = []
    for p in params:
        one = BatchSampler(vocab, CPU)
        one.add([p], [SEEN])
        alone.append(one)
    g = torch.Generator().manual_seed(0)
    for step in range(40):
        logits = torch.stack([logits_for(vocab, step * 100 + i, peak=[0.5, 3.0][step % 2]) for i in range(len(params))])
        uniforms = torch.rand(len(params), generator=g)
        batched = together.sample(logits, uniforms)
        singles = [one.sample(logits[i : i + 1], uniforms[i : i + 1]) for i, one in enumerate(alone)]
        assert batched.tolist() == [int(s) for s in singles], step
        together.observe(batched)
        for one, s in zip(alone, singles, strict=True):
            one.observe(s)


def test_the_penalty_follows_the_chosen_tokens_and_the_rows_through_reordering() -> None:
    vocab = 50
    logits = torch.arange(vocab, dtype=torch.float32)  # the last ids are the most likely
    strong = replace(OK, temperature=0.0, repetition_penalty=100.0)
    plain = replace(OK, temperature=0.0)
    sampler = BatchSampler(vocab, CPU)
    sampler.add([strong, plain, strong], [[49], [49], []])
    seen: list[list[int]] = [[49], [], []]
    for _ in range(5):
        tokens = sampler.sample(logits.expand(3, -1), torch.zeros(3))
        assert tokens.tolist() == [choose_token(logits, p, s, None) for p, s in zip(sampler.params, seen, strict=True)]
        sampler.observe(tokens)
        for s, t in zip(seen, tokens.tolist(), strict=True):
            s.append(t)
    assert seen[0] == [49, 48, 47, 46, 45, 44] and seen[1] == [49] * 5 and seen[2] == [49, 48, 47, 46, 45]
    sampler.reorder([2, 0])  # the middle row leaves; the others keep their own history
    seen = [seen[2], seen[0]]
    tokens = sampler.sample(logits.expand(2, -1), torch.zeros(2))
    assert tokens.tolist() == [44, 43] == [choose_token(logits, strong, s, None) for s in seen]


def test_rows_join_with_their_own_values() -> None:
    vocab = 30
    logits = torch.arange(vocab, dtype=torch.float32)
    sampler = BatchSampler(vocab, CPU)
    sampler.add([replace(OK, temperature=0.0)], [[]])
    sampler.add([replace(OK, temperature=0.0, repetition_penalty=50.0)], [[29, 28]])
    assert sampler.sample(logits.expand(2, -1), torch.zeros(2)).tolist() == [29, 27]
    assert len(sampler) == 2


def test_the_logits_are_left_unchanged() -> None:
    """The engine reads the same logits for the raw logprobs after choosing."""
    logits = torch.randn(2, 100)
    before = logits.clone()
    sampler = BatchSampler(100, CPU)
    sampler.add([replace(OK, repetition_penalty=2.0, top_p=1.0), replace(OK, temperature=0.0)], [SEEN, SEEN])
    sampler.sample(logits, torch.rand(2))
    assert torch.equal(logits, before)


def test_batched_logprobs_equal_each_rows() -> None:
    logits = torch.randn(3, 50)

    def names(ids: list[int]) -> list[str]:
        return [f"t{i}" for i in ids]

    got = batch_logprobs(logits, [4, 0, 49], [0, 3, 20], names)
    assert got == [position_logprobs(logits[i], t, k, names) for i, (t, k) in enumerate([(4, 0), (0, 3), (49, 20)])]
