"""apply-delta on tiny Llama models: a "base" with vocabulary V and a "target" with V + 1 (as LLaMA-7B and
Vicuna-7B v0); the delta is target - base with the extra row, saved sharded as safetensors or as the
2023 PyTorch ``.bin`` layout. base + delta must give back the target."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from modaverse_llm.cli import main
from modaverse_llm.delta import apply_delta, combine

from ...tiny_llama import small_llama_config

VOCAB, HIDDEN, LAYERS, HEAD_DIM = 96, 64, 2, 32
TOKENIZER_FILES = {
    "tokenizer.model": b"\x00sentencepiece stand-in\xff",
    "tokenizer_config.json": b'{"model_max_length": 2048}',
    "special_tokens_map.json": b'{"pad_token": "[PAD]"}',
    "added_tokens.json": json.dumps({"[PAD]": VOCAB}).encode(),
}
IDS = torch.tensor([[1, 5, 17, VOCAB - 1, VOCAB, 3]])  # VOCAB: the added token (the delta's row alone)


def llama_config(vocab: int) -> Any:
    return small_llama_config(vocab, HIDDEN, LAYERS, HEAD_DIM, max_position_embeddings=64)


@dataclass
class Pair:
    base: Any  # LlamaForCausalLM, vocab VOCAB
    target: Any  # LlamaForCausalLM, vocab VOCAB + 1
    delta: dict[str, torch.Tensor]  # target - base, the extra row as in the target


@pytest.fixture(scope="module")
def pair() -> Pair:
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    base = LlamaForCausalLM(llama_config(VOCAB)).eval()
    torch.manual_seed(1)
    target = LlamaForCausalLM(llama_config(VOCAB + 1)).eval()
    base_state = base.state_dict()
    delta = {}
    for name, value in target.state_dict().items():
        diff = value.clone()
        diff[: base_state[name].shape[0]] -= base_state[name]
        delta[name] = diff
    return Pair(base, target, delta)


def inv_freq() -> torch.Tensor:
    return 1.0 / (10000 ** (torch.arange(0, HEAD_DIM, 2).float() / HEAD_DIM))


def save_bin(state: dict[str, torch.Tensor], folder: Path, parts: int, buffers: torch.Tensor | None = None) -> None:
    """The 2023 layout: ``pytorch_model-0000i-of-0000n.bin`` + index (or one ``pytorch_model.bin``),
    with the ``rotary_emb.inv_freq`` buffers the transformers of the day saved."""
    folder.mkdir(parents=True, exist_ok=True)
    state = dict(state)
    if buffers is not None:
        for i in range(LAYERS):
            state[f"model.layers.{i}.self_attn.rotary_emb.inv_freq"] = buffers.clone()
    names = list(state)
    if parts == 1:
        torch.save(state, folder / "pytorch_model.bin")
        return
    weight_map = {}
    for part in range(parts):
        file = f"pytorch_model-{part + 1:05d}-of-{parts:05d}.bin"
        chunk = names[part::parts]  # interleaved, so base and delta shards never line up
        torch.save({n: state[n].clone() for n in chunk}, folder / file)
        weight_map.update(dict.fromkeys(chunk, file))
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def save_model(model: Any, folder: Path, fmt: str, parts: int) -> None:
    if fmt == "safetensors":
        model.save_pretrained(str(folder), max_shard_size="100KB" if parts > 1 else "1GB")
    else:
        save_bin(model.state_dict(), folder, parts, buffers=inv_freq())
        model.config.save_pretrained(str(folder))


def save_delta(pair: Pair, folder: Path, fmt: str, parts: int, dtype: torch.dtype = torch.float32) -> None:
    from transformers import LlamaForCausalLM

    state = {name: value.to(dtype) for name, value in pair.delta.items()}
    if fmt == "safetensors":
        model: Any = LlamaForCausalLM(llama_config(VOCAB + 1))
        model.to(dtype)
        model.load_state_dict(state)
        model.save_pretrained(str(folder), max_shard_size="100KB" if parts > 1 else "1GB")
    else:
        save_bin(state, folder, parts, buffers=torch.zeros(HEAD_DIM // 2))  # make_delta: inv_freq - inv_freq
        llama_config(VOCAB + 1).save_pretrained(str(folder))
        pair.target.generation_config.save_pretrained(str(folder))
    for name, data in TOKENIZER_FILES.items():
        (folder / name).write_bytes(data)


def shard_count(folder: Path) -> int:
    return len(list(folder.glob("*.safetensors"))) + len(list(folder.glob("*.bin")))


def assert_is_target(out: Path, pair: Pair) -> None:
    from transformers import AutoModelForCausalLM

    loaded: Any = AutoModelForCausalLM.from_pretrained(str(out), output_loading_info=True)
    model, info = loaded
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    model.eval()
    got, want = model.state_dict(), pair.target.state_dict()
    assert sorted(got) == sorted(want)
    for name, value in want.items():
        assert got[name].dtype == torch.float32
        torch.testing.assert_close(got[name], value, rtol=0, atol=1e-6, msg=name)
    base_embed = pair.base.state_dict()["model.embed_tokens.weight"]
    assert not torch.allclose(got["model.embed_tokens.weight"][:VOCAB], base_embed)  # not just the base
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=IDS).logits, pair.target(input_ids=IDS).logits, rtol=1e-4, atol=1e-5)
    for name, data in TOKENIZER_FILES.items():
        assert (out / name).read_bytes() == data
    assert not (out / "tokenizer.json").exists()  # only what the delta has
    assert json.loads((out / "config.json").read_text())["vocab_size"] == VOCAB + 1
    assert (out / "generation_config.json").is_file()


@pytest.mark.parametrize(
    ("delta_fmt", "delta_parts", "base_fmt", "base_parts"),
    [
        ("safetensors", 3, "safetensors", 3),
        ("bin", 3, "bin", 2),
        ("bin", 1, "safetensors", 1),
        ("safetensors", 1, "bin", 1),
        ("safetensors", 3, "bin", 4),
    ],
)
def test_apply_delta_gives_the_target(
    tmp_path: Path, pair: Pair, delta_fmt: str, delta_parts: int, base_fmt: str, base_parts: int
) -> None:
    base, delta, out = tmp_path / "llama", tmp_path / "delta", tmp_path / "out" / "vicuna"
    save_model(pair.base, base, base_fmt, base_parts)
    save_delta(pair, delta, delta_fmt, delta_parts)
    n = shard_count(delta)
    assert n >= delta_parts and shard_count(base) >= base_parts  # really sharded as asked
    lines: list[str] = []

    assert apply_delta(base, delta, out, progress=lines.append) == out

    shards = sorted(p.name for p in out.glob("*.safetensors"))
    assert len(shards) == n and len(lines) == n  # one output shard (and one progress line) per delta shard
    if n == 1:
        assert shards == ["model.safetensors"] and not (out / "model.safetensors.index.json").exists()
    else:
        index = json.loads((out / "model.safetensors.index.json").read_text())
        assert sorted(set(index["weight_map"].values())) == shards
        assert sorted(index["weight_map"]) == sorted(pair.target.state_dict())
    assert not list(out.glob("*.bin"))
    assert_is_target(out, pair)
    assert [p.name for p in out.parent.iterdir()] == ["vicuna"]  # no staging left behind


def test_delta_dtype_is_kept_and_the_sum_is_taken_in_float32(tmp_path: Path, pair: Pair) -> None:
    base, delta, out = tmp_path / "llama", tmp_path / "delta", tmp_path / "out"
    save_model(pair.base, base, "safetensors", 1)  # float32 base
    save_delta(pair, delta, "bin", 2, dtype=torch.float16)
    apply_delta(base, delta, out)
    base_state = pair.base.state_dict()
    seen = []
    for shard in sorted(out.glob("*.safetensors")):
        with safe_open(str(shard), framework="pt") as f:
            for name in f.keys():  # noqa: SIM118 (safe_open is not a mapping)
                got = f.get_tensor(name)
                assert got.dtype == torch.float16, name
                want = pair.delta[name].to(torch.float16).float()
                want[: base_state[name].shape[0]] += base_state[name]
                assert torch.equal(got, want.to(torch.float16)), name
                seen.append(name)
    assert sorted(seen) == sorted(pair.delta)


def test_combine_grows_the_vocabulary_rows_only() -> None:
    base = torch.arange(20, dtype=torch.float32).reshape(5, 4)
    delta = torch.ones(6, 4, dtype=torch.bfloat16)
    out = combine("model.embed_tokens.weight", delta, base)
    assert out.dtype == torch.bfloat16 and out.shape == (6, 4)
    assert torch.equal(out[:5].float(), base + 1) and torch.equal(out[5].float(), torch.ones(4))
    assert torch.equal(delta, torch.ones(6, 4, dtype=torch.bfloat16))  # the delta is not modified
    with pytest.raises(ValueError, match=r"shape mismatch for tensor lm_head.weight: delta \(4, 4\) vs base \(5, 4\)"):
        combine("lm_head.weight", torch.ones(4, 4), base)  # fewer rows
    with pytest.raises(ValueError, match=r"lm_head.weight: delta \(6, 3\) vs base \(5, 4\).*same hidden size"):
        combine("lm_head.weight", torch.ones(6, 3), base)  # other hidden size
    with pytest.raises(ValueError, match=r"model.layers.0.mlp.up_proj.weight: delta \(6, 4\) vs base \(5, 4\)"):
        combine("model.layers.0.mlp.up_proj.weight", torch.ones(6, 4), base)  # only the vocabulary may grow
    with pytest.raises(ValueError, match="tensor x: expected floating point"):
        combine("x", torch.ones(5, 4, dtype=torch.int64), base)


# Error cases, on small hand-made checkpoints.

WEIGHTS = {
    "model.embed_tokens.weight": (5, 4),
    "model.layers.0.mlp.up_proj.weight": (8, 4),
    "lm_head.weight": (5, 4),
}


def write_safetensors(folder: Path, shapes: Mapping[str, tuple[int, ...]], config: bool = True) -> Path:
    folder.mkdir(parents=True)
    save_file({name: torch.randn(shape) for name, shape in shapes.items()}, str(folder / "model.safetensors"))
    if config:
        (folder / "config.json").write_text("{}")
    return folder


def assert_nothing_written(tmp_path: Path) -> None:
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".apply-delta-")]


def test_a_delta_tensor_missing_from_the_base_is_an_error(tmp_path: Path) -> None:
    base = write_safetensors(tmp_path / "base", WEIGHTS)
    delta = write_safetensors(tmp_path / "delta", {**WEIGHTS, "model.layers.1.mlp.up_proj.weight": (8, 4)})
    with pytest.raises(ValueError, match=r"1 delta tensor\(s\) not in the base .*: model.layers.1.mlp.up_proj.weight"):
        apply_delta(base, delta, tmp_path / "out")
    assert_nothing_written(tmp_path)


def test_a_base_tensor_the_delta_lacks_means_the_wrong_base(tmp_path: Path) -> None:
    base = write_safetensors(tmp_path / "base", {**WEIGHTS, "model.layers.1.mlp.up_proj.weight": (8, 4)})
    delta = write_safetensors(tmp_path / "delta", WEIGHTS)
    with pytest.raises(ValueError, match=r"not in the delta .*\(wrong base\?\): model.layers.1.mlp.up_proj.weight"):
        apply_delta(base, delta, tmp_path / "out")
    assert_nothing_written(tmp_path)


def test_a_shape_mismatch_is_an_error(tmp_path: Path) -> None:
    base = write_safetensors(tmp_path / "base", {**WEIGHTS, "model.layers.0.mlp.up_proj.weight": (8, 5)})
    delta = write_safetensors(tmp_path / "delta", {**WEIGHTS, "lm_head.weight": (6, 4)})  # growth is fine
    with pytest.raises(ValueError, match=r"up_proj.weight: delta \(8, 4\) vs base \(8, 5\)"):
        apply_delta(base, delta, tmp_path / "out")
    assert_nothing_written(tmp_path)


def test_the_small_checkpoint_works_when_shapes_agree(tmp_path: Path) -> None:
    base = write_safetensors(tmp_path / "base", WEIGHTS)
    delta = write_safetensors(tmp_path / "delta", {**WEIGHTS, "lm_head.weight": (6, 4)})
    apply_delta(base, delta, tmp_path / "out")
    with safe_open(str(tmp_path / "out" / "model.safetensors"), framework="pt") as f:
        assert f.get_tensor("lm_head.weight").shape == (6, 4)
    assert (tmp_path / "out" / "config.json").read_text() == "{}"


def test_out_must_not_exist(tmp_path: Path) -> None:
    base = write_safetensors(tmp_path / "base", WEIGHTS)
    delta = write_safetensors(tmp_path / "delta", WEIGHTS)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep").write_text("mine")
    with pytest.raises(FileExistsError, match="out exists"):
        apply_delta(base, delta, tmp_path / "out")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["keep"]


def test_missing_files_are_named(tmp_path: Path) -> None:
    base = write_safetensors(tmp_path / "base", WEIGHTS)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no weights in delta folder .*empty"):
        apply_delta(base, tmp_path / "empty", tmp_path / "out")
    with pytest.raises(FileNotFoundError, match=r"base folder .*nowhere does not exist"):
        apply_delta(tmp_path / "nowhere", base, tmp_path / "out")
    no_config = write_safetensors(tmp_path / "no-config", WEIGHTS, config=False)
    with pytest.raises(FileNotFoundError, match=r"no config\.json in the delta"):
        apply_delta(base, no_config, tmp_path / "out")
    sharded = tmp_path / "sharded"
    save_bin({name: torch.zeros(shape) for name, shape in WEIGHTS.items()}, sharded, parts=2)
    (sharded / "pytorch_model-00002-of-00002.bin").unlink()
    (sharded / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"delta shard .*pytorch_model-00002-of-00002.bin .*does not exist"):
        apply_delta(base, sharded, tmp_path / "out")
    assert_nothing_written(tmp_path)


def test_cli(tmp_path: Path, pair: Pair, capsys: pytest.CaptureFixture[str]) -> None:
    base, delta, out = tmp_path / "llama", tmp_path / "delta", tmp_path / "vicuna"
    save_model(pair.base, base, "bin", 2)
    save_delta(pair, delta, "bin", 3)
    args = ["apply-delta", "--base", str(base), "--delta", str(delta), "--out", str(out)]
    with pytest.raises(SystemExit) as code:
        main(args)
    assert code.value.code == 0
    captured = capsys.readouterr()
    assert captured.out == f"{out}\n"
    steps = [line.split()[0] for line in captured.err.splitlines() if line.startswith("[")]
    assert steps == ["[1/3]", "[2/3]", "[3/3]"]  # one progress line per delta shard, on stderr
    assert_is_target(out, pair)

    with pytest.raises(SystemExit) as code:
        main(args)  # out exists now
    assert code.value.code == 1
    captured = capsys.readouterr()
    assert captured.out == "" and "apply-delta: error:" in captured.err and "exists" in captured.err


def test_legacy_bin_files_are_read_without_mmap(tmp_path: Path) -> None:
    state = {name: torch.randn(shape) for name, shape in WEIGHTS.items()}
    (tmp_path / "base").mkdir()
    torch.save(state, tmp_path / "base" / "pytorch_model.bin", _use_new_zipfile_serialization=False)
    delta = write_safetensors(tmp_path / "delta", WEIGHTS)
    apply_delta(tmp_path / "base", delta, tmp_path / "out")
    with safe_open(str(tmp_path / "out" / "model.safetensors"), framework="pt") as f:
        up = "model.layers.0.mlp.up_proj.weight"
        with safe_open(str(delta / "model.safetensors"), framework="pt") as d:
            torch.testing.assert_close(f.get_tensor(up), state[up] + d.get_tensor(up))


def test_a_bin_that_is_not_a_state_dict_is_an_error(tmp_path: Path) -> None:
    base = write_safetensors(tmp_path / "base", WEIGHTS)
    (tmp_path / "delta").mkdir()
    torch.save([torch.zeros(1)], tmp_path / "delta" / "pytorch_model.bin")
    with pytest.raises(ValueError, match=r"pytorch_model\.bin is not a state dict of tensors"):
        apply_delta(base, tmp_path / "delta", tmp_path / "out")
    assert_nothing_written(tmp_path)
