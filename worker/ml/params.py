"""Hyperparameters shared by training, inference and scoring."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["DROPOUT_POSITIONS", "STRATEGY_NAMES", "TrainParams"]

DROPOUT_POSITIONS: tuple[str, ...] = ("all", "decoder")
SCORE_PRECISIONS: tuple[str, ...] = ("auto", "float32")
# The names registered in worker.ml.scoring, kept here so the API can check a name without importing
# torch and MONAI (a cold import of them made the first cycle start after a restart take 30-40 s).
STRATEGY_NAMES: tuple[str, ...] = ("bald", "coreset", "entropy", "mc_dropout_variance", "mc_dropout_variance_fg",
                                   "random", "stratified_power")

_TUPLE_FIELDS = ("patch_size", "channels", "strides", "flip_axes")


@dataclass
class TrainParams:
    """Hyperparameters of one model: network shape, training schedule and MC-dropout scoring.

    Args:
        steps: optimiser steps per training run, whatever the number of labelled cases (a fixed budget
            makes cycles comparable and keeps small labelled sets from being under-trained).
        epochs: legacy: when set, ``steps`` becomes epochs x ceil(cases x samples_per_volume / batch_size).
        learning_rate: peak Adam learning rate.
        lr_schedule: "poly" (linear warm-up over the first 5 % of steps, then (1 - t)^0.9 decay, as
            nnU-Net) or "constant".
        augment: MONAI augmentation of training patches (small affine, intensity scale/shift, noise).
        flip_axes: patch axes (0, 1, 2 = D, H, W) flipped at random; empty by default because a flip
            swaps left and right, which would confuse lateral structures (left/right parotid).
        val_every: with validation cases, evaluate every this many steps (and at the end) and keep the
            checkpoint with the best mean foreground validation Dice; 0 evaluates at the end only.
        batch_size: patches per optimiser step.
        patch_size: (D, H, W) training patch and sliding-window ROI; each side must be divisible by the
            product of ``strides`` so every window fits the UNet's down/up-sampling exactly.
        mc_passes: T, the number of stochastic forward passes used by the MC-dropout strategies.
        dropout: p, the dropout probability in [0, 1).
        dropout_position: "all" (every conv block) or "decoder" (only the up path keeps p).
        channels: UNet feature channels per level.
        strides: UNet down-sampling strides, one fewer than ``channels``.
        num_res_units: residual units per UNet block (0 gives plain convolutions).
        seed: seeds training (weights init, patch sampling, case order) and the MC-dropout masks.
        samples_per_volume: patches drawn from each labelled case per epoch.
        foreground_ratio: probability that a patch is centred on a foreground voxel.
        sw_overlap: sliding-window overlap fraction in [0, 1).
        sw_batch_size: windows per network call during sliding-window inference.
        score_whole_volume_voxels: a decoder-only-dropout network scores a case whose padded volume has at most
            this many voxels in one window covering the whole volume (no overlapping windows computed twice; one
            dropout mask per pass for every voxel trivially); 0 keeps sliding windows. Normalisation statistics
            then come from the whole volume rather than from ROI-sized windows, so scores and predictions differ
            from sliding-window ones, and so may the ranking (benchmarks/whole_volume_agreement.py measured
            Spearman's rho -0.24 over 8 CT cases with a short-trained model): compare before turning it on.
        score_precision: "auto" runs the score phase's network passes (MC passes and the prediction) under
            bfloat16 autocast where the device computes bfloat16 natively (a CUDA GPU that supports it, a CPU with
            AVX512-BF16 or AMX), else in float32; "float32" always in float32. Statistics accumulate in float64
            either way. Case scores move by about 0.1 %; tests/ml/test_precision.py checks that the ranking of a
            fixed set of cases stays (Spearman's rho >= 0.99).
        score_pass_batch: MC passes run together, in one network call per batch of windows (each pass with its own
            dropout masks, drawn as if it ran alone: the statistics do not depend on it). 0 (auto): all T passes on
            a CUDA GPU, halving the group while the GPU runs out of memory; one at a time elsewhere, where
            memory then stays flat in T. Memory for the decoder's activations grows with the group.
        query_size: cases an annotation round is expected to take; batch-aware strategies (core-set)
            spread their first ``query_size`` picks.
        temperature: initial temperature of stochastic (power / Gumbel) selection; 0 is greedy top-k.
        temperature_decay: factor applied to the temperature after every model version, so selection
            explores early and exploits late.
    """

    steps: int = 2000
    epochs: int | None = None
    learning_rate: float = 1e-3
    lr_schedule: Literal["poly", "constant"] = "poly"
    augment: bool = True
    flip_axes: tuple[int, ...] = ()
    val_every: int = 250
    batch_size: int = 2
    patch_size: tuple[int, int, int] = (96, 96, 96)
    mc_passes: int = 5
    dropout: float = 0.5
    dropout_position: Literal["all", "decoder"] = "all"
    channels: tuple[int, ...] = (16, 32, 64, 128)
    strides: tuple[int, ...] = (2, 2, 2)
    num_res_units: int = 1
    seed: int = 0
    samples_per_volume: int = 2
    foreground_ratio: float = 0.67
    sw_overlap: float = 0.25
    sw_batch_size: int = 1
    score_whole_volume_voxels: int = 0
    score_precision: Literal["auto", "float32"] = "auto"
    score_pass_batch: int = 0
    query_size: int = 10
    temperature: float = 1.0
    temperature_decay: float = 0.5

    def validate(self) -> None:
        """Check every field, raising ``ValueError`` with a plain message for the first bad one."""
        for name in ("steps", "batch_size", "mc_passes", "samples_per_volume", "sw_batch_size", "query_size"):
            _require_int(name, getattr(self, name), minimum=1)
        if self.epochs is not None:
            _require_int("epochs", self.epochs, minimum=1)
        _require_int("num_res_units", self.num_res_units, minimum=0)
        _require_int("val_every", self.val_every, minimum=0)
        if self.lr_schedule not in ("poly", "constant"):
            raise ValueError(f"lr_schedule must be poly or constant, got {self.lr_schedule!r}")
        if not isinstance(self.augment, bool):
            raise ValueError(f"augment must be true or false, got {self.augment!r}")
        if not isinstance(self.flip_axes, tuple) or any(a not in (0, 1, 2) for a in self.flip_axes):
            raise ValueError(f"flip_axes must be a list of axes among 0, 1, 2, got {self.flip_axes!r}")
        for name in ("temperature", "temperature_decay"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
        _require_int("seed", self.seed, minimum=0)
        lr = self.learning_rate
        if not isinstance(lr, int | float) or isinstance(lr, bool) or not math.isfinite(lr) or lr <= 0:
            raise ValueError(f"learning_rate must be a positive number, got {lr!r}")
        _require_unit_interval("dropout", self.dropout, include_one=False)
        _require_unit_interval("foreground_ratio", self.foreground_ratio, include_one=True)
        _require_unit_interval("sw_overlap", self.sw_overlap, include_one=False)
        _require_int("score_pass_batch", self.score_pass_batch, minimum=0)
        if self.score_whole_volume_voxels < 0:
            raise ValueError(f"score_whole_volume_voxels must be >= 0, got {self.score_whole_volume_voxels}")
        if self.score_precision not in SCORE_PRECISIONS:
            options = ", ".join(SCORE_PRECISIONS)
            raise ValueError(f"score_precision must be one of {options}, got {self.score_precision!r}")
        if self.dropout_position not in DROPOUT_POSITIONS:
            options = ", ".join(DROPOUT_POSITIONS)
            raise ValueError(f"dropout_position must be one of {options}, got {self.dropout_position!r}")
        self._validate_architecture()

    def _validate_architecture(self) -> None:
        _require_int_tuple("channels", self.channels, minimum=1)
        _require_int_tuple("strides", self.strides, minimum=1)
        _require_int_tuple("patch_size", self.patch_size, minimum=1)
        if len(self.channels) < 2:
            raise ValueError(f"channels must have at least 2 levels, got {self.channels!r}")
        if len(self.strides) != len(self.channels) - 1:
            raise ValueError(
                f"strides must have one entry fewer than channels ({len(self.channels) - 1}), "
                f"got {len(self.strides)}"
            )
        if len(self.patch_size) != 3:
            raise ValueError(f"patch_size must have 3 entries (D, H, W), got {self.patch_size!r}")
        factor = math.prod(self.strides)
        if any(side % factor for side in self.patch_size):
            raise ValueError(
                f"patch_size must be divisible by {factor} (the product of strides), got {self.patch_size!r}"
            )

    def steps_for(self, cases: int) -> int:
        """The optimiser steps of one training run on ``cases`` labelled cases."""
        if self.epochs is None:
            return self.steps
        return self.epochs * max(1, math.ceil(cases * self.samples_per_volume / self.batch_size))

    def temperature_at(self, round_index: int) -> float:
        """Selection temperature after ``round_index`` earlier model versions."""
        return float(self.temperature * self.temperature_decay ** max(round_index, 0))

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict of all fields (tuples become lists)."""
        out = dataclasses.asdict(self)
        for name in _TUPLE_FIELDS:
            out[name] = list(out[name])
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainParams:
        """Build validated params from a (possibly partial) dict.

        Keys whose value is None are ignored, so they take the default; lists are accepted for tuple fields.

        Raises:
            ValueError: on unknown keys (all of them are named) or on an invalid value.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown training parameter(s): {', '.join(unknown)}")
        kwargs = {k: v for k, v in data.items() if v is not None}
        for name in _TUPLE_FIELDS:
            if name in kwargs:
                if not isinstance(kwargs[name], list | tuple):
                    raise ValueError(f"{name} must be a list of integers, got {kwargs[name]!r}")
                kwargs[name] = tuple(kwargs[name])
        params = cls(**kwargs)
        params.validate()
        return params


def _require_int(name: str, value: Any, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _require_unit_interval(name: str, value: Any, include_one: bool) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and value >= 0 and (value <= 1 if include_one else value < 1)
    if not ok:
        interval = "[0, 1]" if include_one else "[0, 1)"
        raise ValueError(f"{name} must be in {interval}, got {value!r}")


def _require_int_tuple(name: str, value: Any, minimum: int) -> None:
    ok = isinstance(value, tuple) and len(value) > 0
    ok = ok and all(isinstance(v, int) and not isinstance(v, bool) and v >= minimum for v in value)
    if not ok:
        raise ValueError(f"{name} must be a non-empty tuple of integers >= {minimum}, got {value!r}")
