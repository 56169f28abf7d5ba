"""Uncertainty scores that rank unlabelled cases for annotation (higher = annotate first).

The MC-dropout strategies share one pass loop (:func:`mc_dropout_statistics`): T passes, each with one
dropout mask per layer for the whole volume (every sliding window), accumulated in O(1) memory in T.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
from torch import nn

from worker.ml.inference import default_device, sliding_window_probabilities
from worker.ml.network import consistent_dropout_modules, mc_dropout_mode
from worker.ml.params import TrainParams

__all__ = [
    "STRATEGIES",
    "MCStatistics",
    "RunningMoments",
    "ScoreResult",
    "Strategy",
    "get_strategy",
    "mc_dropout_statistics",
    "register_strategy",
    "score_case",
    "variance_score_from_probs",
]

logger = logging.getLogger(__name__)


@dataclass
class ScoreResult:
    """Score of one case.

    Args:
        score: ranking score; higher means annotate first.
        extras: further named statistics (plain floats).
        voxel_map: optional (D, H, W) float32 per-voxel uncertainty on the image grid.
    """

    score: float
    extras: dict[str, float] = field(default_factory=dict)
    voxel_map: np.ndarray | None = None


class Strategy(Protocol):
    """A scoring strategy: maps a model and one normalised volume to a :class:`ScoreResult`."""

    def __call__(
        self, model: nn.Module, image_norm: np.ndarray, params: TrainParams, *, case_key: int, device: str
    ) -> ScoreResult: ...


STRATEGIES: dict[str, Strategy] = {}


def register_strategy(name: str) -> Callable[[Strategy], Strategy]:
    """Decorator adding a strategy to :data:`STRATEGIES` under ``name`` (names must be unique)."""

    def decorator(func: Strategy) -> Strategy:
        if name in STRATEGIES:
            raise ValueError(f"scoring strategy {name!r} is already registered")
        STRATEGIES[name] = func
        return func

    return decorator


def get_strategy(name: str) -> Strategy:
    """The strategy registered as ``name``; ValueError listing the known names otherwise."""
    try:
        return STRATEGIES[name]
    except KeyError:
        known = ", ".join(sorted(STRATEGIES))
        raise ValueError(f"unknown scoring strategy {name!r}; known: {known}") from None


def score_case(
    model: nn.Module,
    image_norm: np.ndarray,
    strategy: str,
    params: TrainParams,
    *,
    case_key: int,
    device: str | None = None,
) -> ScoreResult:
    """Score one unlabelled case.

    Args:
        model: trained segmentation network (moved to ``device``; its modes are restored afterwards).
        image_norm: (D, H, W) normalised image.
        strategy: a name in :data:`STRATEGIES`.
        params: T = ``mc_passes``, the seed, and sliding-window settings.
        case_key: stable integer identifying the case; only "random" uses it.
        device: "cpu", "cuda", ...; None picks CUDA when available.
    """
    func = get_strategy(strategy)
    params.validate()
    return func(model, image_norm, params, case_key=case_key, device=default_device(device))


class RunningMoments:
    """Per-element running mean and population variance (Welford) of a stream of same-shape tensors.

    Holds two buffers of the stream's shape whatever the stream length, so MC-dropout memory does not grow
    with T. Accumulates in float64 by default: probabilities' variances can be ~1e-6 and float32 Welford
    updates over many voxels lose digits we want for ranking.

    Args:
        dtype: accumulation dtype.
    """

    def __init__(self, dtype: torch.dtype = torch.float64) -> None:
        self.dtype = dtype
        self.count = 0
        self._mean: torch.Tensor | None = None
        self._m2: torch.Tensor | None = None

    def update(self, x: torch.Tensor) -> None:
        """Add one sample (any shape, fixed across calls)."""
        x = x.to(self.dtype)
        self.count += 1
        if self._mean is None or self._m2 is None:
            self._mean = x.clone()
            self._m2 = torch.zeros_like(x)
            return
        if x.shape != self._mean.shape:
            raise ValueError(f"sample shape {tuple(x.shape)} differs from {tuple(self._mean.shape)}")
        delta = x - self._mean
        self._mean += delta / self.count
        self._m2 += delta * (x - self._mean)

    @property
    def mean(self) -> torch.Tensor:
        """Element-wise mean of the samples so far."""
        if self._mean is None:
            raise RuntimeError("RunningMoments has no samples")
        return self._mean

    @property
    def variance(self) -> torch.Tensor:
        """Element-wise population variance (divides by the sample count T, not T - 1)."""
        if self._m2 is None:
            raise RuntimeError("RunningMoments has no samples")
        return self._m2 / self.count

    @property
    def nbytes(self) -> int:
        """Bytes held by the accumulator's buffers."""
        return sum(t.numel() * t.element_size() for t in (self._mean, self._m2) if t is not None)


@dataclass
class MCStatistics:
    """Running statistics of T MC-dropout passes over one volume.

    Args:
        moments: per (class, voxel) mean and population variance of the softmax probability, (C, D, H, W).
        entropy_sum: per-voxel sum over passes of that pass's predictive entropy (nats), (D, H, W).
        passes: T.
    """

    moments: RunningMoments
    entropy_sum: torch.Tensor
    passes: int


def mc_dropout_statistics(
    model: nn.Module, image_norm: np.ndarray, params: TrainParams, device: str
) -> MCStatistics:
    """Run T = ``params.mc_passes`` MC-dropout passes and accumulate their statistics.

    Only dropout modules are in train mode (:func:`mc_dropout_mode`); normalisation layers use their eval
    statistics. Every :class:`ConsistentDropout` is frozen on one CPU generator seeded with ``params.seed``
    and resampled before each pass, so each pass is one fixed sub-network applied to every sliding window.
    Masks depend only on the seed and the ROI, so all cases scored with the same seed see the same T
    sub-networks and their scores are comparable, and re-scoring reproduces them.

    Args:
        model: network with ConsistentDropout layers (see :func:`worker.ml.network.build_unet`).
        image_norm: (D, H, W) normalised image.
        params: mc_passes, seed and sliding-window settings.
        device: device to run and accumulate on.
    """
    dropouts = consistent_dropout_modules(model)
    if not any(m.p > 0 for m in dropouts):
        logger.warning("model has no active dropout; MC-dropout uncertainty will be zero")
    generator = torch.Generator().manual_seed(params.seed)
    moments = RunningMoments()
    entropy_sum: torch.Tensor | None = None
    model.to(device)
    with mc_dropout_mode(model), torch.inference_mode():
        for module in dropouts:
            module.freeze(generator)
        try:
            for _ in range(params.mc_passes):
                for module in dropouts:
                    module.resample()
                probs = sliding_window_probabilities(model, image_norm, params)
                moments.update(probs)
                entropy = _entropy(probs.double())
                entropy_sum = entropy if entropy_sum is None else entropy_sum + entropy
                del probs
        finally:
            for module in dropouts:
                module.unfreeze()
    assert entropy_sum is not None
    return MCStatistics(moments=moments, entropy_sum=entropy_sum, passes=params.mc_passes)


def variance_score_from_probs(probs: torch.Tensor) -> float:
    """Reference MC-dropout variance score from stacked passes (for tests; holds T x C x volume).

    Per voxel, the population variance over the T passes of each class probability, averaged over the C
    classes, summed over the volume.

    Args:
        probs: (T, C, *spatial) softmax probabilities of T passes.
    """
    if probs.ndim < 3:
        raise ValueError(f"probs must be (T, C, *spatial), got shape {tuple(probs.shape)}")
    return float(probs.double().var(dim=0, unbiased=False).mean(dim=0).sum())


def _entropy(probs: torch.Tensor) -> torch.Tensor:
    """Entropy in nats over dim 0; xlogy makes 0 log 0 = 0."""
    entropy: torch.Tensor = -torch.special.xlogy(probs, probs).sum(dim=0)
    return entropy


def _to_map(x: torch.Tensor) -> np.ndarray:
    return x.float().cpu().numpy().astype(np.float32, copy=False)


def _variance_result(stats: MCStatistics, fg_normalised: bool) -> ScoreResult:
    voxel_var = stats.moments.variance.mean(dim=0)
    foreground = stats.moments.mean.argmax(dim=0) > 0
    fg_mean = float(voxel_var[foreground].mean()) if bool(foreground.any()) else 0.0
    total = float(voxel_var.sum())
    extras = {"variance_mean": float(voxel_var.mean()), "variance_fg_mean": fg_mean}
    return ScoreResult(score=fg_mean if fg_normalised else total, extras=extras, voxel_map=_to_map(voxel_var))


@register_strategy("mc_dropout_variance")
def _mc_dropout_variance(
    model: nn.Module, image_norm: np.ndarray, params: TrainParams, *, case_key: int, device: str
) -> ScoreResult:
    """Rahimi et al.: per-voxel class-probability variance over T passes, mean over classes, summed."""
    return _variance_result(mc_dropout_statistics(model, image_norm, params, device), fg_normalised=False)


@register_strategy("mc_dropout_variance_fg")
def _mc_dropout_variance_fg(
    model: nn.Module, image_norm: np.ndarray, params: TrainParams, *, case_key: int, device: str
) -> ScoreResult:
    """As mc_dropout_variance, but ranked by the mean variance over predicted-foreground voxels."""
    return _variance_result(mc_dropout_statistics(model, image_norm, params, device), fg_normalised=True)


@register_strategy("entropy")
def _entropy_strategy(
    model: nn.Module, image_norm: np.ndarray, params: TrainParams, *, case_key: int, device: str
) -> ScoreResult:
    """Predictive entropy of the mean probability over T passes, summed over the volume."""
    stats = mc_dropout_statistics(model, image_norm, params, device)
    entropy = _entropy(stats.moments.mean)
    return ScoreResult(
        score=float(entropy.sum()), extras={"entropy_mean": float(entropy.mean())}, voxel_map=_to_map(entropy)
    )


@register_strategy("bald")
def _bald(
    model: nn.Module, image_norm: np.ndarray, params: TrainParams, *, case_key: int, device: str
) -> ScoreResult:
    """BALD mutual information: entropy of the mean minus mean per-pass entropy, summed over the volume."""
    stats = mc_dropout_statistics(model, image_norm, params, device)
    predictive = _entropy(stats.moments.mean)
    # Non-negative by Jensen; clamp away float round-off.
    mutual_info = (predictive - stats.entropy_sum / stats.passes).clamp_min(0.0)
    extras = {"bald_mean": float(mutual_info.mean()), "entropy_mean": float(predictive.mean())}
    return ScoreResult(score=float(mutual_info.sum()), extras=extras, voxel_map=_to_map(mutual_info))


@register_strategy("random")
def _random(
    model: nn.Module, image_norm: np.ndarray, params: TrainParams, *, case_key: int, device: str
) -> ScoreResult:
    """Uniform [0, 1) score seeded by (seed, case_key): a baseline that needs no model pass."""
    if case_key < 0:
        raise ValueError(f"case_key must be >= 0 for the random strategy, got {case_key}")
    return ScoreResult(score=float(np.random.default_rng([params.seed, case_key]).random()))
