"""Hyperparameters shared by training, inference and scoring."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["DROPOUT_POSITIONS", "TrainParams"]

DROPOUT_POSITIONS: tuple[str, ...] = ("all", "decoder")

_TUPLE_FIELDS = ("patch_size", "channels", "strides")


@dataclass
class TrainParams:
    """Hyperparameters of one model: network shape, training schedule and MC-dropout scoring.

    Args:
        epochs: passes over the labelled cases; each case contributes ``samples_per_volume`` patches.
        learning_rate: Adam learning rate.
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
    """

    epochs: int = 50
    learning_rate: float = 1e-3
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

    def validate(self) -> None:
        """Check every field, raising ``ValueError`` with a plain message for the first bad one."""
        for name in ("epochs", "batch_size", "mc_passes", "samples_per_volume", "sw_batch_size"):
            _require_int(name, getattr(self, name), minimum=1)
        _require_int("num_res_units", self.num_res_units, minimum=0)
        _require_int("seed", self.seed, minimum=0)
        lr = self.learning_rate
        if not isinstance(lr, int | float) or isinstance(lr, bool) or not math.isfinite(lr) or lr <= 0:
            raise ValueError(f"learning_rate must be a positive number, got {lr!r}")
        _require_unit_interval("dropout", self.dropout, include_one=False)
        _require_unit_interval("foreground_ratio", self.foreground_ratio, include_one=True)
        _require_unit_interval("sw_overlap", self.sw_overlap, include_one=False)
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
