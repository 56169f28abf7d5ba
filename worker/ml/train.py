"""Patch-based training of the segmentation UNet."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from monai.losses import DiceCELoss
from monai.utils import set_determinism
from torch import nn

from worker.ml.inference import default_device
from worker.ml.network import DEFAULT_NORM, NormSpec, build_unet
from worker.ml.params import TrainParams
from worker.ml.transforms import normalise, sample_patches

__all__ = ["TrainResult", "TrainingCancelled", "train_model"]

logger = logging.getLogger(__name__)


class TrainingCancelled(Exception):
    """Raised by :func:`train_model` when its ``should_stop`` callback returns True."""


@dataclass
class TrainResult:
    """Outcome of :func:`train_model`.

    Args:
        state_dict: trained weights, on the CPU.
        epoch_losses: mean training loss of each epoch, in order.
        seconds: wall-clock training time.
    """

    state_dict: dict[str, torch.Tensor]
    epoch_losses: list[float] = field(default_factory=list)
    seconds: float = 0.0


def train_model(
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    num_classes: int,
    modality: str,
    params: TrainParams,
    *,
    init_state: dict[str, torch.Tensor] | None = None,
    progress: Callable[[int, float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    device: str | None = None,
    norm: NormSpec = DEFAULT_NORM,
) -> TrainResult:
    """Train a UNet (see :func:`worker.ml.network.build_unet`) with DiceCE loss and Adam.

    An epoch is one pass over the labelled cases in a shuffled order, each case giving
    ``params.samples_per_volume`` patches, so the work per epoch grows with the labelled set. Patches are
    batched in order (a batch may span two cases; the last batch of an epoch may be smaller).
    Results are deterministic for a given ``params.seed`` on a given device: the seed drives MONAI's
    ``set_determinism`` (weight init, training-time dropout), a numpy Generator (patch sampling) and a torch
    Generator (case order).

    Args:
        images: (D, H, W) raw images (normalised here according to ``modality``).
        labels: (D, H, W) integer label maps with values in [0, num_classes).
        num_classes: classes including background (>= 2).
        modality: "CT" or "MR".
        params: hyperparameters; validated first.
        init_state: weights to start from (e.g. the previous model version) instead of a fresh init.
        progress: called as ``progress(epoch, mean_loss)`` after each epoch, epoch counting from 1.
        should_stop: polled before every optimiser step; returning True raises :class:`TrainingCancelled`.
        device: "cpu", "cuda", ...; None picks CUDA when available.
        norm: normalisation layer spec passed to :func:`build_unet`.

    Returns:
        :class:`TrainResult` with CPU weights, per-epoch mean losses and the elapsed seconds.
    """
    params.validate()
    norm_images, int_labels = _prepare_cases(images, labels, num_classes, modality)
    dev = torch.device(default_device(device))
    start = time.perf_counter()
    set_determinism(seed=params.seed)
    rng = np.random.default_rng(params.seed)
    order_gen = torch.Generator().manual_seed(params.seed)

    model = build_unet(num_classes, params, norm=norm)
    if init_state is not None:
        model.load_state_dict(init_state)
    model.to(dev).train()
    optimiser = torch.optim.Adam(model.parameters(), lr=params.learning_rate)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)

    epoch_losses: list[float] = []
    for epoch in range(1, params.epochs + 1):
        order = torch.randperm(len(norm_images), generator=order_gen).tolist()
        batches = _batches(norm_images, int_labels, order, params, rng)
        step_losses = []
        for x, y in batches:
            if should_stop is not None and should_stop():
                raise TrainingCancelled(f"training cancelled during epoch {epoch}")
            step_losses.append(_train_step(model, optimiser, loss_fn, x.to(dev), y.to(dev)))
        mean_loss = float(np.mean(step_losses))
        epoch_losses.append(mean_loss)
        logger.debug("epoch %d/%d: loss %.5f", epoch, params.epochs, mean_loss)
        if progress is not None:
            progress(epoch, mean_loss)

    seconds = time.perf_counter() - start
    logger.info("trained %d epoch(s) on %d case(s) in %.1f s", params.epochs, len(norm_images), seconds)
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return TrainResult(state_dict=state, epoch_losses=epoch_losses, seconds=seconds)


def _prepare_cases(
    images: Sequence[np.ndarray], labels: Sequence[np.ndarray], num_classes: int, modality: str
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Check shapes and label range, normalise images, cast labels to int64."""
    if len(images) == 0:
        raise ValueError("need at least one labelled case to train")
    if len(images) != len(labels):
        raise ValueError(f"got {len(images)} images but {len(labels)} labels")
    norm_images, int_labels = [], []
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        if image.ndim != 3 or image.shape != label.shape:
            shapes = f"{image.shape} and {label.shape}"
            raise ValueError(f"case {i}: image and label must be 3D with equal shapes, got {shapes}")
        lab = np.asarray(label).astype(np.int64)
        if lab.min() < 0 or lab.max() >= num_classes:
            found = f"[{lab.min()}, {lab.max()}]"
            raise ValueError(f"case {i}: label values must be in [0, {num_classes}), got {found}")
        norm_images.append(normalise(image, modality))
        int_labels.append(lab)
    return norm_images, int_labels


def _batches(
    images: list[np.ndarray],
    labels: list[np.ndarray],
    order: list[int],
    params: TrainParams,
    rng: np.random.Generator,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (B, 1, *patch) image and label batches, sampling each case's patches lazily.

    Lazy sampling keeps at most one batch of patches in memory, whatever the number of cases.
    """
    pending: list[tuple[np.ndarray, np.ndarray]] = []
    for idx in order:
        pending += sample_patches(
            images[idx],
            labels[idx],
            params.patch_size,
            params.samples_per_volume,
            params.foreground_ratio,
            rng,
        )
        while len(pending) >= params.batch_size:
            yield _collate(pending[: params.batch_size])
            pending = pending[params.batch_size :]
    if pending:
        yield _collate(pending)


def _collate(pairs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.from_numpy(np.stack([p[0] for p in pairs]))[:, None]
    y = torch.from_numpy(np.stack([p[1] for p in pairs]))[:, None]
    return x, y


def _train_step(
    model: nn.Module, optimiser: torch.optim.Optimizer, loss_fn: nn.Module, x: torch.Tensor, y: torch.Tensor
) -> float:
    optimiser.zero_grad(set_to_none=True)
    loss = loss_fn(model(x), y)
    loss.backward()
    optimiser.step()
    return float(loss.detach())
