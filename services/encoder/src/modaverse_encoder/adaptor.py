"""Linear adaptors from ImageBind space into the LLM's embedding space.

The release has one ``Linear(1024 -> 4096)`` shared by all modalities (its
``linear_proj``); the paper describes one per modality. Both are one module here:
``mode="shared"`` stores a single layer, ``mode="per_modality"`` one per input kind.
Each layer may emit several rows per item (``rows``; 1 in the release).

On disk: ``adaptor_config.json`` + ``adaptor.safetensors`` with keys
``<name>.weight`` / ``<name>.bias`` where name is ``shared`` or a kind.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

CONFIG_NAME = "adaptor_config.json"
WEIGHTS_NAME = "adaptor.safetensors"
KINDS = ("image", "video", "audio")


@dataclass(frozen=True)
class AdaptorConfig:
    in_dim: int
    out_dim: int
    mode: str = "shared"  # "shared" | "per_modality"
    rows: int = 1
    kinds: tuple[str, ...] = field(default=KINDS)

    def __post_init__(self) -> None:
        if self.mode not in ("shared", "per_modality"):
            raise ValueError(f"adaptor mode must be 'shared' or 'per_modality', got {self.mode!r}")
        if self.in_dim < 1 or self.out_dim < 1 or self.rows < 1:
            raise ValueError("adaptor dimensions and rows must be positive")
        unknown = set(self.kinds) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown adaptor kinds {sorted(unknown)}")


class Adaptor(nn.Module):
    def __init__(self, config: AdaptorConfig) -> None:
        super().__init__()
        self.config = config
        names = ["shared"] if config.mode == "shared" else list(config.kinds)
        self.layers = nn.ModuleDict({name: nn.Linear(config.in_dim, config.out_dim * config.rows) for name in names})

    def forward(self, kind: str, x: torch.Tensor) -> torch.Tensor:
        """(batch, in_dim) -> (batch, rows, out_dim)."""
        name = "shared" if self.config.mode == "shared" else kind
        y: torch.Tensor = self.layers[name](x)
        return y.reshape(x.shape[0], self.config.rows, self.config.out_dim)

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        config = asdict(self.config)
        config["kinds"] = list(self.config.kinds)
        (directory / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
        tensors = {k.removeprefix("layers."): v.detach().contiguous() for k, v in self.state_dict().items()}
        save_file(tensors, str(directory / WEIGHTS_NAME), metadata={"format": "pt"})

    @classmethod
    def load(cls, directory: Path, device: torch.device | str = "cpu") -> Adaptor:
        config_path = directory / CONFIG_NAME
        if not config_path.is_file():
            raise FileNotFoundError(f"no {CONFIG_NAME} in adaptor folder {directory}")
        raw = json.loads(config_path.read_text())
        config = AdaptorConfig(**{**raw, "kinds": tuple(raw.get("kinds", KINDS))})
        adaptor = cls(config)
        tensors = load_file(str(directory / WEIGHTS_NAME), device=str(device))
        adaptor.load_state_dict({f"layers.{k}": v for k, v in tensors.items()}, strict=True)
        return adaptor.to(device)
