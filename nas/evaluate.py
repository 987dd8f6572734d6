"""Scoring a sub-network: batch-norm recalibration, then batched evaluation.

A supernet's batch-norm running statistics are an average over every sub-network trained
through it and fit none of them. Before a candidate is scored, its standalone network is
extracted and its statistics are recomputed (an exact average, not a moving one) on a fixed set
of training images at the candidate's resolution; the same images for every candidate.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from search_spaces import ArchSpec
from search_spaces.supernet import Supernet

from .data import Dataset


def resize(images: Tensor, resolution: int) -> Tensor:
    """Images at ``resolution`` x ``resolution`` (anti-aliased bilinear; unchanged if already so)."""
    if images.shape[-1] == resolution and images.shape[-2] == resolution:
        return images
    return F.interpolate(images, size=(resolution, resolution), mode="bilinear", antialias=True, align_corners=False)


@torch.no_grad()
def recalibrate_batch_norm(model: nn.Module, batches: Iterable[Tensor]) -> nn.Module:
    """Replace every batch norm's running statistics by their exact average over ``batches``
    (forward passes in train mode for batch norm only); returns ``model`` in eval mode."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    model.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
        m.train()
    for x in batches:
        model(x)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    return model.eval()


@dataclass(frozen=True)
class Score:
    accuracy: float
    loss: float
    examples: int


@torch.inference_mode()
def evaluate_model(model: nn.Module, images: Tensor, labels: Tensor, batch_size: int = 500) -> Score:
    """Top-1 accuracy and mean cross-entropy of ``model`` (eval mode) on the given tensors."""
    model.eval()
    correct, loss = 0, 0.0
    for start in range(0, len(labels), batch_size):
        logits = model(images[start : start + batch_size])
        y = labels[start : start + batch_size]
        correct += int((logits.argmax(1) == y).sum())
        loss += float(F.cross_entropy(logits, y, reduction="sum"))
    n = len(labels)
    return Score(correct / n if n else float("nan"), loss / n if n else float("nan"), n)


class SubnetEvaluator:
    """Accuracy a sub-network inherits from a trained supernet, batch norm recalibrated.

    ``evaluator(spec)`` -> :class:`Score` on ``split``; ``evaluator.model(spec)`` -> the
    standalone network (eval mode) that score belongs to. Images resized to each resolution
    are computed once and kept.
    """

    def __init__(
        self,
        supernet: Supernet,
        data: Dataset,
        split: str = "val",
        calibration_images: int = 500,
        calibration_batch_size: int = 100,
        batch_size: int = 500,
        seed: int = 0,
    ) -> None:
        if calibration_images < 1 or calibration_batch_size < 1:
            raise ValueError(
                f"calibration needs at least one image and a batch size >= 1, but got "
                f"{calibration_images} images in batches of {calibration_batch_size}"
            )
        self.supernet = supernet.eval()
        self.data = data
        self.split = split
        self.batch_size = batch_size
        self.calibration_batch_size = calibration_batch_size
        # A fixed random subset of the training images, the same for every candidate.
        order = torch.randperm(data.size("train"), generator=torch.Generator().manual_seed(seed))
        self._calibration = data.images["train"][order[:calibration_images]]
        self._resized: dict[tuple[str, int], Tensor] = {}

    def _images(self, which: str, resolution: int) -> Tensor:
        key = (which, resolution)
        if key not in self._resized:
            source = self._calibration if which == "calibration" else self.data.images[which]
            self._resized[key] = resize(source, resolution)
        return self._resized[key]

    def model(self, spec: ArchSpec) -> nn.Module:
        """The standalone network of ``spec`` with inherited weights and recalibrated batch norm."""
        model = self.supernet.extract(spec)
        images = self._images("calibration", spec.resolution)
        step = self.calibration_batch_size
        return recalibrate_batch_norm(model, (images[i : i + step] for i in range(0, len(images), step)))

    def __call__(self, spec: ArchSpec) -> Score:
        return evaluate_model(
            self.model(spec), self._images(self.split, spec.resolution), self.data.labels[self.split], self.batch_size
        )
