from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class CycleCreate(BaseModel):
    """Training and scoring parameters; anything left out takes the default (see worker/ml/params.py)."""

    model_config = ConfigDict(extra="forbid")
    steps: int | None = Field(None, ge=1, le=1_000_000, description="optimiser steps per training run")
    epochs: int | None = Field(None, ge=1, le=10_000, description="legacy: steps = epochs x batches per epoch")
    learning_rate: float | None = Field(None, gt=0, le=1)
    lr_schedule: Literal["poly", "constant"] | None = None
    augment: bool | None = None
    flip_axes: list[int] | None = None
    val_every: int | None = Field(None, ge=0, le=1_000_000)
    batch_size: int | None = Field(None, ge=1, le=64)
    patch_size: list[int] | int | None = None
    mc_passes: int | None = Field(None, ge=2, le=100, description="T, Monte-Carlo dropout passes")
    dropout: float | None = Field(None, ge=0, lt=1, description="p")
    dropout_position: Literal["all", "decoder"] | None = None
    channels: list[int] | None = None
    strides: list[int] | None = None
    samples_per_volume: int | None = Field(None, ge=1, le=64)
    sw_overlap: float | None = Field(None, ge=0, lt=1)
    score_whole_volume_voxels: int | None = Field(None, ge=0, description=(
        "decoder-only dropout: score cases whose padded volume has at most this many voxels in one whole-volume "
        "window instead of overlapping sliding windows (0: always sliding windows)"))
    score_precision: Literal["auto", "float32"] | None = Field(None, description=(
        "auto (default): the score phase runs in bfloat16 where the worker's device computes it natively, else "
        "float32; float32: always float32"))
    score_pass_batch: int | None = Field(None, ge=0, le=64, description=(
        "MC passes run together per network call (0, default: all T on a CUDA GPU, halved while it runs out of "
        "memory; one at a time elsewhere); the scores do not depend on it"))
    query_size: int | None = Field(None, ge=1, le=10_000)
    temperature: float | None = Field(None, ge=0, le=100)
    temperature_decay: float | None = Field(None, ge=0, le=10)
    # Random is the default because no strategy beat it in the paired experiment on msd-hippocampus
    # (docs/hippocampus-experiment.md); the others stay available by name.
    strategy: str = "random"
    seed: int | None = Field(None, ge=0)
    warm_start: bool = False


METRICS_MEANING = (
    "Dice overlap between the model's label map and the reference mask, averaged over the split's cases "
    "(a case where a structure is in neither mask is left out for it): 1 = identical, 0 = no overlap. "
    "per_class lists every label including the background (index 0, near "
    "1 whenever most voxels are background); mean_dice is the mean over the structures only, background "
    "excluded. Top level: the validation split (validation_cases cases); test: the same on the test split. "
    "A structure at 0 was not found by the model yet (too few labels or steps). kept_step: the training step "
    "whose checkpoint was kept (best validation Dice, validation_history)")
PROGRESS_MEANING = ("how far the current phase is: train: step of steps and the last loss; score: scored of "
                    "total cases")


class CyclePublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    project_id: int
    status: str
    phase: str | None
    strategy: str
    warm_start: bool
    params: dict[str, Any]
    progress: dict[str, Any] = Field(description=PROGRESS_MEANING)
    timings: dict[str, Any] = Field(description="seconds spent in each phase")
    metrics: dict[str, Any] = Field(description=METRICS_MEANING)
    error: str | None
    cancel_requested: bool
    model_version_id: int | None
    ranking_id: int | None
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    heartbeat_at: dt.datetime | None = Field(
        None, description="last sign of life from the worker running the current phase")


class ModelVersionPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    project_id: int
    version: int
    cycle_id: int
    params: dict[str, Any]
    metrics: dict[str, Any] = Field(description=METRICS_MEANING)
    trained_case_ids: list[int]
    created_at: dt.datetime
