"""Patch-based training of the segmentation UNet."""

from __future__ import annotations

import dataclasses
import io
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from monai.losses import DiceCELoss
from monai.utils import set_determinism
from torch import nn

from worker.ml.cancel import Cancelled, StopCheck
from worker.ml.inference import default_device
from worker.ml.network import DEFAULT_NORM, NormSpec, build_unet
from worker.ml.params import TrainParams
from worker.ml.transforms import make_augmentation, normalise, sample_patches

__all__ = ["TrainCheckpoint", "TrainResult", "TrainingCancelled", "train_model"]

logger = logging.getLogger(__name__)


class TrainingCancelled(Cancelled):
    """Raised by :func:`train_model` when its ``should_stop`` callback returns True."""


@dataclass
class TrainResult:
    """Outcome of :func:`train_model`.

    Args:
        state_dict: the kept weights (best validation Dice when validation cases were given, else the
            last), on the CPU.
        epoch_losses: mean training loss of each logging interval (``LOG_EVERY`` steps), in order.
        seconds: wall-clock training time.
        steps: optimiser steps run.
        best_step: the step whose weights were kept.
        validation: (step, mean foreground validation Dice) at each evaluation.
        resumed_from: the checkpoint step this run continued from (0: it started at step 1).
    """

    state_dict: dict[str, torch.Tensor]
    epoch_losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    steps: int = 0
    best_step: int = 0
    validation: list[tuple[int, float]] = field(default_factory=list)
    resumed_from: int = 0


@dataclass
class TrainCheckpoint:
    """Everything a run needs to continue after ``step``: weights, optimiser and schedule state, the patch sampler's
    random state, the losses so far and the best-validation bookkeeping. Plain tensors, dicts, lists and numbers,
    so ``torch.load(..., weights_only=True)`` reads it back.

    A resumed run draws the same patches as an uninterrupted one. Not saved, so a resumed run differs there: MONAI's
    augmentation transforms' own random state (with ``augment``) and, on a GPU, the CUDA generator that draws the
    training dropout masks (only the CPU generator is saved). On the CPU without augmentation it ends with the same
    weights (tests/ml/test_train.py).
    """

    step: int
    model: dict[str, torch.Tensor]
    optimiser: dict[str, Any]
    scheduler: dict[str, Any]
    sampler: dict[str, Any]
    torch_rng: torch.Tensor
    losses: list[float]
    best_dice: float
    best_step: int
    best_state: dict[str, torch.Tensor] | None
    history: list[tuple[int, float]]

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        torch.save(dataclasses.asdict(self), buffer)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> TrainCheckpoint:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        payload["history"] = [tuple(h) for h in payload["history"]]
        return cls(**payload)


LOG_EVERY = 50
# Progress is also reported between logging intervals once this many seconds passed: on a CPU, 50 steps
# can take minutes, and a progress bar stuck at 0 reads as a hang.
PROGRESS_EVERY_S = 5.0


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
    val_images: Sequence[np.ndarray] = (),
    val_labels: Sequence[np.ndarray] = (),
    resume: TrainCheckpoint | None = None,
    checkpoint: Callable[[TrainCheckpoint], None] | None = None,
    checkpoint_every_s: float = 60.0,
) -> TrainResult:
    """Train a UNet (see :func:`worker.ml.network.build_unet`) with DiceCE loss and Adam.

    A run is a fixed budget of ``params.steps_for(len(images))`` optimiser steps; each step draws
    ``batch_size`` cases at random and one patch from each (foreground-centred with probability
    ``foreground_ratio``), augmented when ``params.augment``. The learning rate follows
    ``params.lr_schedule``. With validation cases the model is evaluated every ``params.val_every`` steps
    and at the end, and the weights with the best mean foreground Dice are returned.
    Results are deterministic for a given ``params.seed`` on a given device.

    Args:
        images: (D, H, W) raw images (normalised here according to ``modality``).
        labels: (D, H, W) integer label maps with values in [0, num_classes).
        num_classes: classes including background (>= 2).
        modality: "CT" or "MR".
        params: hyperparameters; validated first.
        init_state: weights to start from (e.g. the previous model version) instead of a fresh init.
        progress: called as ``progress(step, mean_loss)`` every ``LOG_EVERY`` steps, at the end, and in
            between once ``PROGRESS_EVERY_S`` seconds have passed (mean loss of the steps so far in the interval).
        should_stop: polled before every optimiser step and every validation window; returning True raises
            :class:`TrainingCancelled`.
        device: "cpu", "cuda", ...; None picks CUDA when available.
        norm: normalisation layer spec passed to :func:`build_unet`.
        val_images: raw validation images, for checkpoint selection.
        val_labels: their label maps.
        resume: a checkpoint of this run (same data and params) to continue from instead of step 1.
        checkpoint: called with a :class:`TrainCheckpoint` after a step once ``checkpoint_every_s`` seconds have
            passed since the last one (never after the last step), so a killed run loses at most that much work.
        checkpoint_every_s: see ``checkpoint``.

    Returns:
        :class:`TrainResult` with CPU weights, losses, the kept step and the validation history.
    """
    params.validate()
    norm_images, int_labels = _prepare_cases(images, labels, num_classes, modality)
    dev = torch.device(default_device(device))
    start = time.perf_counter()
    set_determinism(seed=params.seed)
    rng = np.random.default_rng(params.seed)
    model = build_unet(num_classes, params, norm=norm)
    if init_state is not None:
        model.load_state_dict(init_state)
    model.to(dev).train()
    steps = params.steps_for(len(norm_images))
    optimiser = torch.optim.Adam(model.parameters(), lr=params.learning_rate)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, _schedule(params.lr_schedule, steps))
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    augment = make_augmentation(params) if params.augment else None
    keeper = _BestKeeper(model, val_images, val_labels, modality, params, dev, should_stop)

    losses: list[float] = []
    first = 1
    if resume is not None:
        first = _restore(resume, model, optimiser, scheduler, rng, keeper, steps) + 1
        losses = list(resume.losses)
    window: list[float] = []
    reported = saved = time.monotonic()
    for step in range(first, steps + 1):
        if should_stop is not None and should_stop():
            raise TrainingCancelled(f"training cancelled at step {step} of {steps}")
        x, y = _batch(norm_images, int_labels, params, rng, augment)
        window.append(_train_step(model, optimiser, loss_fn, x.to(dev), y.to(dev)))
        scheduler.step()
        if step % LOG_EVERY == 0 or step == steps:
            losses.append(float(np.mean(window)))
            window = []
            if progress is not None:
                progress(step, losses[-1])
                reported = time.monotonic()
        elif progress is not None and time.monotonic() - reported >= PROGRESS_EVERY_S:
            progress(step, float(np.mean(window)))
            reported = time.monotonic()
        if step == steps or (params.val_every and step % params.val_every == 0):
            try:
                keeper.check(step)
            except Cancelled as exc:
                raise TrainingCancelled(f"training cancelled during the validation at step {step} of {steps}") from exc
        if checkpoint is not None and step < steps and time.monotonic() - saved >= checkpoint_every_s:
            checkpoint(_checkpoint(step, model, optimiser, scheduler, rng, keeper, losses))
            saved = time.monotonic()

    seconds = time.perf_counter() - start
    logger.info("trained %d step(s) on %d case(s) in %.1f s; kept step %d", steps, len(norm_images), seconds,
                keeper.best_step)
    return TrainResult(state_dict=keeper.state(), epoch_losses=losses, seconds=seconds, steps=steps,
                       best_step=keeper.best_step, validation=keeper.history, resumed_from=first - 1)


def _cpu(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in state.items()}


def _checkpoint(step: int, model: nn.Module, optimiser: torch.optim.Optimizer, scheduler: Any,
                rng: np.random.Generator, keeper: _BestKeeper, losses: list[float]) -> TrainCheckpoint:
    return TrainCheckpoint(
        step=step, model=_cpu(model.state_dict()), optimiser=optimiser.state_dict(), scheduler=scheduler.state_dict(),
        sampler=dict(rng.bit_generator.state), torch_rng=torch.get_rng_state(), losses=list(losses),
        best_dice=keeper.best_dice, best_step=keeper.best_step, best_state=keeper.best_state,
        history=list(keeper.history))


def _restore(ck: TrainCheckpoint, model: nn.Module, optimiser: torch.optim.Optimizer, scheduler: Any,
             rng: np.random.Generator, keeper: _BestKeeper, steps: int) -> int:
    if not 0 < ck.step < steps:
        raise ValueError(f"checkpoint at step {ck.step} does not fit a run of {steps} steps")
    model.load_state_dict(ck.model)
    optimiser.load_state_dict(ck.optimiser)
    scheduler.load_state_dict(ck.scheduler)
    rng.bit_generator.state = ck.sampler
    torch.set_rng_state(ck.torch_rng)
    keeper.best_dice, keeper.best_step, keeper.best_state = ck.best_dice, ck.best_step, ck.best_state
    keeper.history = list(ck.history)
    logger.info("resuming training at step %d of %d", ck.step + 1, steps)
    return ck.step


def _schedule(kind: str, steps: int) -> Callable[[int], float]:
    warmup = max(1, steps // 20)

    def poly(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, 1.0 - step / steps) ** 0.9

    return poly if kind == "poly" else (lambda _step: 1.0)


class _BestKeeper:
    """Keeps the weights with the best validation Dice (or the last weights without validation cases)."""

    def __init__(self, model: nn.Module, images: Sequence[np.ndarray], labels: Sequence[np.ndarray], modality: str,
                 params: TrainParams, device: torch.device, should_stop: StopCheck | None = None) -> None:
        self.model, self.images, self.labels = model, list(images), list(labels)
        self.modality, self.params, self.device = modality, params, str(device)
        # A validation pass over full volumes can take longer than the bound on acting on a cancel.
        self.should_stop = should_stop
        self.best_dice = -1.0
        self.best_step = 0
        self.best_state: dict[str, torch.Tensor] | None = None
        self.history: list[tuple[int, float]] = []

    def check(self, step: int) -> None:
        if not self.images:
            self.best_step, self.best_state = step, None
            return
        from worker.ml.inference import evaluate

        dice = float(evaluate(self.model, self.images, self.labels, self.modality, self.params, self.device,
                              self.should_stop)["mean_dice"])
        self.model.train()
        self.history.append((step, round(dice, 5)))
        if dice > self.best_dice:
            self.best_dice, self.best_step = dice, step
            self.best_state = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}

    def state(self) -> dict[str, torch.Tensor]:
        if self.best_state is not None:
            return self.best_state
        return {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}


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


def _batch(
    images: list[np.ndarray],
    labels: list[np.ndarray],
    params: TrainParams,
    rng: np.random.Generator,
    augment: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]] | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One (B, 1, *patch) batch: ``batch_size`` cases drawn at random, one (augmented) patch each."""
    pairs = []
    for idx in rng.integers(len(images), size=params.batch_size):
        image, label = sample_patches(images[idx], labels[idx], params.patch_size, 1, params.foreground_ratio,
                                      rng)[0]
        if augment is not None:
            out = augment({"image": image[None], "label": label[None]})
            image, label = np.asarray(out["image"])[0], np.asarray(out["label"])[0]
        pairs.append((np.ascontiguousarray(image, dtype=np.float32), np.ascontiguousarray(label).astype(np.int64)))
    return _collate(pairs)


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
