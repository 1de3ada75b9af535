from __future__ import annotations

from pathlib import Path

import pytest
import torch

from modaverse_encoder.adaptor import Adaptor, AdaptorConfig
from modaverse_encoder.checkpoint import build_imagebind, load_imagebind, save_imagebind


@pytest.mark.parametrize("mode", ["shared", "per_modality"])
def test_adaptor_round_trip(tmp_path: Path, mode: str) -> None:
    torch.manual_seed(0)
    adaptor = Adaptor(AdaptorConfig(in_dim=16, out_dim=8, mode=mode, rows=2))
    adaptor.save(tmp_path)
    loaded = Adaptor.load(tmp_path)
    x = torch.randn(3, 16)
    for kind in ("image", "video", "audio"):
        out = loaded(kind, x)
        assert out.shape == (3, 2, 8)
        assert torch.equal(out, adaptor(kind, x))
    if mode == "per_modality":
        assert not torch.equal(loaded("image", x), loaded("audio", x))
    else:
        assert torch.equal(loaded("image", x), loaded("audio", x))


def test_adaptor_rejects_bad_config() -> None:
    with pytest.raises(ValueError, match="mode"):
        AdaptorConfig(in_dim=4, out_dim=4, mode="mlp")
    with pytest.raises(ValueError, match="positive"):
        AdaptorConfig(in_dim=0, out_dim=4)


def test_adaptor_load_needs_config(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"adaptor_config\.json"):
        Adaptor.load(tmp_path)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path]:
    torch.manual_seed(1)
    model = build_imagebind("imagebind_tiny").eval()
    path = save_imagebind(model, tmp_path_factory.mktemp("ib"), "imagebind_tiny")
    return model, path


def test_loaded_checkpoint_reproduces_the_saved_model(tiny_checkpoint: tuple[torch.nn.Module, Path]) -> None:
    model, path = tiny_checkpoint
    loaded = load_imagebind(path, "imagebind_tiny", {"vision", "audio", "text"})
    images, audio = torch.randn(2, 3, 224, 224), torch.randn(2, 3, 1, 128, 204)
    texts = torch.zeros(2, 77, dtype=torch.long)
    texts[:, :3] = torch.tensor([[49406, 320, 49407], [49406, 1125, 49407]])  # start, a word, end
    with torch.inference_mode():
        for key, x in (("vision", images), ("audio", audio), ("text", texts)):
            assert torch.allclose(loaded({key: x})[key], model({key: x})[key], atol=1e-6)


def test_a_checkpoint_without_a_served_branch_names_it(
    tiny_checkpoint: tuple[torch.nn.Module, Path], tmp_path: Path
) -> None:
    _, path = tiny_checkpoint
    state = torch.load(path, weights_only=True)
    slim = tmp_path / "imagebind.pth"
    torch.save({k: v for k, v in state.items() if k.split(".")[1] != "text"}, slim)
    with pytest.raises(ValueError, match=r"has no weights for the ImageBind branches \['text'\]"):
        load_imagebind(slim, "imagebind_tiny", {"vision", "text"})


def test_unserved_branches_are_not_loaded(tiny_checkpoint: tuple[torch.nn.Module, Path]) -> None:
    _, path = tiny_checkpoint
    loaded = load_imagebind(path, "imagebind_tiny", {"vision"})
    trunks = loaded.modality_trunks
    assert isinstance(trunks, torch.nn.ModuleDict)
    assert set(trunks.keys()) == {"vision"}
    assert not any(p.is_meta for p in loaded.parameters())


def test_checkpoint_of_another_architecture_is_rejected(tiny_checkpoint: tuple[torch.nn.Module, Path]) -> None:
    _, path = tiny_checkpoint
    with pytest.raises(RuntimeError, match="size mismatch"):
        load_imagebind(path, "imagebind_tiny", {"vision"}, overrides={"vision_embed_dim": 128})


def test_missing_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="ImageBind checkpoint not found"):
        load_imagebind(tmp_path / "nope.pth", "imagebind_tiny", {"vision"})
