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

from worker.ml.cached import EncodedVolume, decode_passes, decode_probabilities, encode_volume
from worker.ml.cancel import StopCheck
from worker.ml.inference import (
    default_device,
    score_autocast,
    sliding_window_passes,
    sliding_window_probabilities,
)
from worker.ml.network import (
    ConsistentDropout,
    consistent_dropout_modules,
    decoder_only_dropout,
    mc_dropout_mode,
    preserve_modes,
)
from worker.ml.params import TrainParams

__all__ = [
    "STRATEGIES",
    "MCStatistics",
    "RunningMoments",
    "ScoreResult",
    "Strategy",
    "foreground_variance",
    "get_strategy",
    "mc_dropout_statistics",
    "pass_generator",
    "pass_group_size",
    "rank_cases",
    "register_strategy",
    "score_case",
    "structure_uncertainties",
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
        prediction: (D, H, W) uint8 label map of the deterministic (eval-mode) pass, served to annotators.
        embedding: (F,) bottleneck features of that pass, averaged over space (core-set selection).
    """

    score: float
    extras: dict[str, float] = field(default_factory=dict)
    voxel_map: np.ndarray | None = None
    prediction: np.ndarray | None = None
    embedding: np.ndarray | None = None


class Strategy(Protocol):
    """A scoring strategy: maps a model and one normalised volume to a :class:`ScoreResult`.

    ``should_stop`` is passed on to every sliding-window pass (see :func:`mc_dropout_statistics`).
    ``encoded`` (passed only when not None) holds the cached encoder outputs of a decoder-only-dropout
    network (:mod:`worker.ml.cached`); MC-dropout strategies hand it to :func:`mc_dropout_statistics`.
    """

    def __call__(
        self, model: nn.Module, image_norm: np.ndarray, params: TrainParams, *, case_key: int, device: str,
        should_stop: StopCheck | None = None, encoded: EncodedVolume | None = None,
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
    with_prediction: bool = True,
    should_stop: StopCheck | None = None, encoded: EncodedVolume | None = None,
) -> ScoreResult:
    """Score one unlabelled case, with the model's prediction and embedding from one deterministic pass.

    Args:
        model: trained segmentation network (moved to ``device``; its modes are restored afterwards).
        image_norm: (D, H, W) normalised image.
        strategy: a name in :data:`STRATEGIES`.
        params: T = ``mc_passes``, the seed, and sliding-window settings.
        case_key: stable integer identifying the case; only "random" uses it.
        device: "cpu", "cuda", ...; None picks CUDA when available.
        with_prediction: run the deterministic pass for ``prediction`` and ``embedding``.
        should_stop: polled before every batch of sliding windows (of every MC pass and of the
            prediction); returning True raises :class:`worker.ml.cancel.Cancelled`. One case can take
            tens of seconds, far longer than an admin should wait for a cancel to act.
    """
    func = get_strategy(strategy)
    params.validate()
    dev = default_device(device)
    model.to(dev)
    with score_autocast(dev, params.score_precision):
        return _score_case(model, image_norm, strategy, func, params, case_key=case_key, dev=dev,
                           with_prediction=with_prediction, should_stop=should_stop)


def _score_case(
    model: nn.Module, image_norm: np.ndarray, strategy: str, func: Strategy, params: TrainParams, *, case_key: int,
    dev: str, with_prediction: bool, should_stop: StopCheck | None,
) -> ScoreResult:
    encoded = None
    if decoder_only_dropout(model) and (with_prediction or strategy not in MODEL_FREE):
        # The encoder runs once; every MC pass and the prediction below reuse it (worker.ml.cached).
        with preserve_modes(model), torch.inference_mode():
            model.eval()
            encoded = encode_volume(model, image_norm, params, should_stop)
    extra = {} if encoded is None else {"encoded": encoded}
    result = func(model, image_norm, params, case_key=case_key, device=dev, should_stop=should_stop, **extra)
    if with_prediction:
        embedding: list[torch.Tensor] = []
        with preserve_modes(model), torch.inference_mode():
            model.eval()
            if encoded is None:
                probs = sliding_window_probabilities(model, image_norm, params, embedding, should_stop)
            else:
                probs = decode_probabilities(model, encoded, should_stop)
        result.prediction = probs.argmax(dim=0).cpu().numpy().astype(np.uint8)
        result.embedding = (encoded.embedding() if encoded is not None
                            else embedding[0].cpu().numpy().astype(np.float32))
    return result


# Strategies that run no model pass for their score.
MODEL_FREE = frozenset({"random"})


class RunningMoments:
    """Per-element running mean and population variance of a stream of same-shape tensors.

    Holds two buffers of the stream's shape (the sum and the sum of squares) whatever the stream length, so
    MC-dropout memory does not grow with T. Accumulates in float64: probabilities lie in [0, 1], so
    E[x^2] - E[x]^2 loses at most ~1e-15 to cancellation, far below the ~1e-6 variances we rank by, and two
    fused adds per pass cost a fraction of Welford's five float64 operations.

    Args:
        dtype: accumulation dtype.
    """

    def __init__(self, dtype: torch.dtype = torch.float64) -> None:
        self.dtype = dtype
        self.count = 0
        self._sum: torch.Tensor | None = None
        self._sum_sq: torch.Tensor | None = None

    def update(self, x: torch.Tensor) -> None:
        """Add one sample (any shape, fixed across calls)."""
        x = x.to(self.dtype)
        self.count += 1
        if self._sum is None or self._sum_sq is None:
            self._sum = x.clone()
            self._sum_sq = x * x
            return
        if x.shape != self._sum.shape:
            raise ValueError(f"sample shape {tuple(x.shape)} differs from {tuple(self._sum.shape)}")
        self._sum += x
        self._sum_sq.addcmul_(x, x)

    @property
    def mean(self) -> torch.Tensor:
        """Element-wise mean of the samples so far."""
        if self._sum is None:
            raise RuntimeError("RunningMoments has no samples")
        return self._sum / self.count

    @property
    def variance(self) -> torch.Tensor:
        """Element-wise population variance (divides by the sample count T, not T - 1)."""
        if self._sum is None or self._sum_sq is None:
            raise RuntimeError("RunningMoments has no samples")
        mean = self._sum / self.count
        return (self._sum_sq / self.count - mean * mean).clamp_min_(0.0)

    @property
    def nbytes(self) -> int:
        """Bytes held by the accumulator's buffers."""
        return sum(t.numel() * t.element_size() for t in (self._sum, self._sum_sq) if t is not None)


@dataclass
class MCStatistics:
    """Running statistics of T MC-dropout passes over one volume.

    Args:
        moments: per (class, voxel) mean and population variance of the softmax probability, (C, D, H, W).
        entropy_sum: per-voxel sum over passes of that pass's predictive entropy (nats), (D, H, W); None
            unless asked for (only BALD uses it, and it costs a logarithm per class and voxel per pass).
        passes: T.
    """

    moments: RunningMoments
    entropy_sum: torch.Tensor | None
    passes: int


def mc_dropout_statistics(
    model: nn.Module, image_norm: np.ndarray, params: TrainParams, device: str, should_stop: StopCheck | None = None,
    *, with_entropy: bool = False, encoded: EncodedVolume | None = None,
) -> MCStatistics:
    """Run T = ``params.mc_passes`` MC-dropout passes and accumulate their statistics.

    Only dropout modules are in train mode (:func:`mc_dropout_mode`); normalisation layers use their eval
    statistics. Every :class:`ConsistentDropout` is frozen, and pass t draws its masks from its own CPU generator
    (:func:`pass_generator` of ``params.seed`` and t), so each pass is one fixed sub-network applied to every
    sliding window. Masks depend only on the seed, the pass and the ROI, not on which passes run together
    (``params.score_pass_batch``) or on the device, so all cases scored with the same seed see the same T
    sub-networks and their scores are comparable, and re-scoring reproduces them.

    Args:
        model: network with ConsistentDropout layers (see :func:`worker.ml.network.build_unet`).
        image_norm: (D, H, W) normalised image.
        params: mc_passes, seed, score_pass_batch and sliding-window settings.
        device: device to run and accumulate on.
        should_stop: polled before every batch of windows of every pass (see :func:`score_case`).
        with_entropy: also accumulate the per-pass predictive entropy (BALD).
        encoded: cached encoder outputs of a decoder-only-dropout network (:func:`worker.ml.cached.encode_volume`
            on the same image); each pass then runs only the decoder. The masks drawn are the same as in a full
            pass (the encoder's dropout layers have p = 0 and draw nothing), so the statistics are too.
    """
    dropouts = consistent_dropout_modules(model)
    if not any(m.p > 0 for m in dropouts):
        logger.warning("model has no active dropout; MC-dropout uncertainty will be zero")
    stats = MCStatistics(moments=RunningMoments(), entropy_sum=None, passes=params.mc_passes)
    model.to(device)
    group = pass_group_size(params, device)
    with mc_dropout_mode(model), torch.inference_mode():
        for module in dropouts:
            module.freeze()
        try:
            first = 0
            while first < params.mc_passes:
                group = min(group, params.mc_passes - first)
                try:
                    probs = _run_passes(model, dropouts, image_norm, params, range(first, first + group), should_stop,
                                        encoded)
                except torch.OutOfMemoryError:
                    if group == 1 or params.score_pass_batch:
                        raise
                    group //= 2
                    logger.warning("out of device memory with MC passes run together; now %d at a time", group)
                    continue
                for one in probs:
                    _accumulate(stats, one, with_entropy)
                del probs
                first += group
        finally:
            for module in dropouts:
                module.unfreeze()
    return stats


def pass_generator(seed: int, index: int) -> torch.Generator:
    """The CPU generator MC pass ``index`` draws its dropout masks from, for the scoring seed ``seed``."""
    state = np.random.SeedSequence([seed, index]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def pass_group_size(params: TrainParams, device: str) -> int:
    """How many MC passes run together (``TrainParams.score_pass_batch``; 0: all T on CUDA, one elsewhere)."""
    if params.score_pass_batch:
        return min(params.score_pass_batch, params.mc_passes)
    return params.mc_passes if torch.device(device).type == "cuda" else 1


def _run_passes(
    model: nn.Module, dropouts: list[ConsistentDropout], image_norm: np.ndarray, params: TrainParams, passes: range,
    should_stop: StopCheck | None, encoded: EncodedVolume | None,
) -> torch.Tensor:
    """(len(passes), C, D, H, W) probabilities of these passes, run together (``dropouts``: the model's frozen
    ConsistentDropout modules)."""
    generators = [pass_generator(params.seed, index) for index in passes]
    for module in dropouts:
        module.resample(generators)
    if encoded is None:
        return sliding_window_passes(model, image_norm, params, len(passes), should_stop)
    return decode_passes(model, encoded, len(passes), should_stop)


def _accumulate(stats: MCStatistics, probs: torch.Tensor, with_entropy: bool) -> None:
    stats.moments.update(probs)
    if with_entropy:
        entropy = _entropy(probs.double())
        stats.entropy_sum = entropy if stats.entropy_sum is None else stats.entropy_sum + entropy


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


# The largest variance a probability can have: a case whose prediction has no foreground at all is
# treated as maximally uncertain, because these projects segment structures every case contains, so an
# empty prediction means the model missed them entirely (the cases most worth labelling).
MAX_VARIANCE = 0.25


def _variance_result(stats: MCStatistics, fg_normalised: bool) -> ScoreResult:
    voxel_var = stats.moments.variance.mean(dim=0)
    fg_mean = foreground_variance(stats)
    total = float(voxel_var.sum())
    extras = {"variance_mean": float(voxel_var.mean()), "variance_fg_mean": fg_mean}
    return ScoreResult(score=fg_mean if fg_normalised else total, extras=extras, voxel_map=_to_map(voxel_var))


def foreground_variance(stats: MCStatistics) -> float:
    """Mean over predicted-foreground voxels of the variance averaged over the foreground classes.

    Background and air are left out of both averages (they dilute the paper's whole-volume score);
    an empty foreground gives :data:`MAX_VARIANCE` so the case is ranked first, not last.
    """
    foreground = stats.moments.mean[0] < 0.5  # P(background) < 0.5: some structure is more likely
    if not bool(foreground.any()):
        return MAX_VARIANCE
    return float(stats.moments.variance[1:].mean(dim=0)[foreground].mean())


def structure_uncertainties(stats: MCStatistics) -> list[float]:
    """One uncertainty per foreground structure c: the mean variance of P(c) where P(c) > 0.25.

    The region includes the structure's uncertain border; a structure with no such voxel gets
    :data:`MAX_VARIANCE` (the model missed it).
    """
    out = []
    for c in range(1, stats.moments.mean.shape[0]):
        region = stats.moments.mean[c] > 0.25
        out.append(float(stats.moments.variance[c][region].mean()) if bool(region.any()) else MAX_VARIANCE)
    return out


@register_strategy("mc_dropout_variance")
def _mc_dropout_variance(
    model: nn.Module, image_norm: np.ndarray, params: TrainParams, *, case_key: int, device: str,
    should_stop: StopCheck | None = None, encoded: EncodedVolume | None = None,
) -> ScoreResult:
    """Rahimi et al.: per-voxel class-probability variance over T passes, mean over classes, summed."""
    stats = mc_dropout_statistics(model, image_norm, params, device, should_stop, encoded=encoded)
    return _variance_result(stats, fg_normalised=False)


@register_strategy("mc_dropout_variance_fg")
def _mc_dropout_variance_fg(
    model: nn.Module, image_norm: np.ndarray, params: TrainParams, *, case_key: int, device: str,
    should_stop: StopCheck | None = None, encoded: EncodedVolume | None = None,
) -> ScoreResult:
    """Ranked by the foreground-class variance over predicted-foreground voxels (see foreground_variance)."""
    stats = mc_dropout_statistics(model, image_norm, params, device, should_stop, encoded=encoded)
    return _variance_result(stats, fg_normalised=True)


@register_strategy("entropy")
def _entropy_strategy(
    model: nn.Module, image_norm: np.ndarray, params: TrainParams, *, case_key: int, device: str,
    should_stop: StopCheck | None = None, encoded: EncodedVolume | None = None,
) -> ScoreResult:
    """Predictive entropy of the mean probability over T passes, summed over the volume."""
    stats = mc_dropout_statistics(model, image_norm, params, device, should_stop, encoded=encoded)
    entropy = _entropy(stats.moments.mean)
    return ScoreResult(
        score=float(entropy.sum()), extras={"entropy_mean": float(entropy.mean())}, voxel_map=_to_map(entropy)
    )


@register_strategy("bald")
def _bald(
    model: nn.Module, image_norm: np.ndarray, params: TrainParams, *, case_key: int, device: str,
    should_stop: StopCheck | None = None, encoded: EncodedVolume | None = None,
) -> ScoreResult:
    """BALD mutual information: entropy of the mean minus mean per-pass entropy, summed over the volume."""
    stats = mc_dropout_statistics(model, image_norm, params, device, should_stop, with_entropy=True, encoded=encoded)
    assert stats.entropy_sum is not None
    predictive = _entropy(stats.moments.mean)
    # Non-negative by Jensen; clamp away float round-off.
    mutual_info = (predictive - stats.entropy_sum / stats.passes).clamp_min(0.0)
    extras = {"bald_mean": float(mutual_info.mean()), "entropy_mean": float(predictive.mean())}
    return ScoreResult(score=float(mutual_info.sum()), extras=extras, voxel_map=_to_map(mutual_info))


@register_strategy("random")
def _random(
    model: nn.Module, image_norm: np.ndarray, params: TrainParams, *, case_key: int, device: str,
    should_stop: StopCheck | None = None, encoded: EncodedVolume | None = None,
) -> ScoreResult:
    """Uniform [0, 1) score seeded by (seed, case_key): a baseline that needs no model pass."""
    if case_key < 0:
        raise ValueError(f"case_key must be >= 0 for the random strategy, got {case_key}")
    return ScoreResult(score=float(np.random.default_rng([params.seed, case_key]).random()))


@register_strategy("stratified_power")
def _stratified_power(
    model: nn.Module, image_norm: np.ndarray, params: TrainParams, *, case_key: int, device: str,
    should_stop: StopCheck | None = None, encoded: EncodedVolume | None = None,
) -> ScoreResult:
    """Per-structure MC-dropout uncertainty; the ranking fills batches round-robin across structures by
    power (Gumbel) sampling (see :func:`rank_cases`). The score shown is the mean over structures."""
    stats = mc_dropout_statistics(model, image_norm, params, device, should_stop, encoded=encoded)
    per_structure = structure_uncertainties(stats)
    extras = {f"structure_{c}": u for c, u in enumerate(per_structure, start=1)}
    voxel_var = stats.moments.variance[1:].mean(dim=0)
    return ScoreResult(score=float(np.mean(per_structure)), extras=extras, voxel_map=_to_map(voxel_var))


@register_strategy("coreset")
def _coreset(
    model: nn.Module, image_norm: np.ndarray, params: TrainParams, *, case_key: int, device: str,
    should_stop: StopCheck | None = None, encoded: EncodedVolume | None = None,
) -> ScoreResult:
    """Foreground MC-dropout variance; the ranking spreads the most uncertain cases by k-center greedy
    selection over bottleneck embeddings (see :func:`rank_cases`)."""
    stats = mc_dropout_statistics(model, image_norm, params, device, should_stop, encoded=encoded)
    return _variance_result(stats, fg_normalised=True)


# --- from scores to an annotation order ----------------------------------------------------------

Ranker = Callable[[list[tuple[int, ScoreResult]], TrainParams, int], list[int]]


def rank_cases(
    strategy: str, results: list[tuple[int, ScoreResult]], params: TrainParams, round_index: int
) -> list[int]:
    """The annotate-first order of the scored cases.

    Args:
        strategy: the strategy that scored them.
        results: (case key, result) pairs.
        params: seed, query_size and the selection temperature schedule.
        round_index: how many model versions came before this one (0 for the first); stochastic
            selection cools as it grows.

    Returns:
        Case keys, first to annotate first. Most strategies sort by score (ties by key); batch-aware
        strategies build the order themselves.
    """
    get_strategy(strategy)
    return RANKERS.get(strategy, _by_score)(results, params, round_index)


def _by_score(results: list[tuple[int, ScoreResult]], params: TrainParams, round_index: int) -> list[int]:
    return [key for key, _ in sorted(results, key=lambda kr: (-kr[1].score, kr[0]))]


def _stratified_order(results: list[tuple[int, ScoreResult]], params: TrainParams, round_index: int) -> list[int]:
    """Round-robin over structures; each pick is drawn with probability proportional to u^(1/temperature)
    among the cases left (Gumbel-max on log u), so early rounds explore and later ones exploit."""
    if not results:
        return []
    keys = [key for key, _ in sorted(results, key=lambda kr: kr[0])]
    by_key = dict(results)
    names = sorted((k for k in by_key[keys[0]].extras if k.startswith("structure_")), key=lambda n: int(n[10:]))
    if not names:
        return _by_score(results, params, round_index)
    u = np.array([[by_key[k].extras[n] for n in names] for k in keys], dtype=np.float64)
    logits = np.log(np.maximum(u, 1e-12))
    temperature = params.temperature_at(round_index)
    rng = np.random.default_rng([params.seed, round_index])
    left = np.ones(len(keys), dtype=bool)
    order: list[int] = []
    for pick in range(len(keys)):
        column = logits[:, pick % len(names)]
        noisy = column / temperature + rng.gumbel(size=len(keys)) if temperature > 0 else column.copy()
        noisy[~left] = -np.inf
        chosen = int(np.argmax(noisy))
        left[chosen] = False
        order.append(keys[chosen])
    return order


def _coreset_order(results: list[tuple[int, ScoreResult]], params: TrainParams, round_index: int) -> list[int]:
    """k-center greedy over the embeddings of the 3 x query_size most uncertain cases, then the rest by score.

    The first pick is the most uncertain case; each next one is the candidate farthest (in normalised
    bottleneck features) from those already picked, so near-duplicates are not taken together.
    """
    ranked = _by_score(results, params, round_index)
    by_key = dict(results)
    candidates = ranked[: min(len(ranked), 3 * params.query_size)]
    if len(candidates) < 2 or any(by_key[k].embedding is None for k in candidates):
        return ranked
    features = np.stack([np.asarray(by_key[k].embedding, dtype=np.float64) for k in candidates])
    features = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    distance = np.linalg.norm(features - features[0], axis=1)
    picked = [0]
    distance[0] = -1.0
    while len(picked) < len(candidates):
        nxt = int(np.argmax(distance))  # ties go to the more uncertain candidate (lower index)
        picked.append(nxt)
        distance = np.minimum(distance, np.linalg.norm(features - features[nxt], axis=1))
        distance[picked] = -1.0
    head = [candidates[i] for i in picked]
    return head + ranked[len(candidates):]


RANKERS: dict[str, Ranker] = {"stratified_power": _stratified_order, "coreset": _coreset_order}
