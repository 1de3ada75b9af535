"""Whitened adaptor inputs, folded back into the plain ``Linear`` for serving.

A random frozen ImageBind's vectors share a large common component, and what tells shapes apart
lies in low-variance directions (docs/architecture.md#findings). Training the adaptor on whitened
vectors ``z = (x - mean) @ A`` (PCA whitening scaled to unit norm) conditions it far better. Whitening is
affine, so it folds into the adaptor exactly: ``W' = W @ A.T`` and ``b' = b - W' @ mean``; the
export holds the folded layer and the encoder service runs it on raw vectors, unchanged.
"""

from __future__ import annotations

import copy

import torch

from modaverse_encoder.adaptor import Adaptor


def fit_whitening(x: torch.Tensor, rel_eps: float = 1e-4, scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean (D,), A (D, D)) with ``(x - mean) @ A`` of covariance scale² · identity / D (rows of norm ~scale)."""
    x = x.double()
    mean = x.mean(0)
    cov = torch.cov((x - mean).T)
    eigvals, eigvecs = torch.linalg.eigh(cov)
    eigvals = eigvals.clamp(min=0) + rel_eps * float(eigvals.max())
    transform = eigvecs / eigvals.sqrt() * (scale / x.shape[1] ** 0.5)
    return mean.float(), transform.float()


def identity_whitening(dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.zeros(dim), torch.eye(dim)


@torch.no_grad()
def fold(adaptor: Adaptor, mean: torch.Tensor, transform: torch.Tensor) -> Adaptor:
    """The adaptor that computes ``adaptor((x - mean) @ transform)`` from raw ``x``."""
    folded = copy.deepcopy(adaptor).cpu().float()
    for layer in folded.layers.values():
        assert isinstance(layer, torch.nn.Linear)
        weight = layer.weight.double() @ transform.double().cpu().T
        layer.bias.copy_((layer.bias.double() - weight @ mean.double().cpu()).float())
        layer.weight.copy_(weight.float())
    return folded
