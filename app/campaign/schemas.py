from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, Field

ARM_MEANING = (
    "how the claim was served: pinned (an admin pinned the case), ranked (the model's ranking), control (a "
    "uniform random draw from the open cases, with probability control_fraction), cold_start (the seeded random "
    "order used before any model exists: no pre-segmentation), unranked (the case arrived after the ranking was "
    "published), skipped (a case this annotator had skipped before), returned (a reviewer sent the annotator's "
    "reading back for changes), no_lease (uploaded without a live lease of "
    "its author, so no served prediction is known), unrecorded (claimed before arms were recorded)")


class Estimate(BaseModel):
    n: int = Field(description="cases the figure is computed over")
    mean: float | None
    ci_low: float | None = Field(description="95 % Student-t interval; null with fewer than 2 cases")
    ci_high: float | None


class ArmSummary(BaseModel):
    model_version: int | None = Field(description="version number of the model in service at claim time; "
                                                  "null: none (cold start) or not known")
    model_version_id: int | None
    arm: str = Field(description=ARM_MEANING)
    labels: int = Field(description="label versions submitted")
    compared: int = Field(description="of these, with the pre-segmentation Dice computed")
    pending: int = Field(description="of these, whose comparison has not run yet")
    mean_foreground_dice: Estimate = Field(description="per case the mean Dice over the foreground classes present, "
                                                       "then the mean over cases")
    dice: dict[str, Estimate] = Field(description="per foreground class, the mean Dice over cases where the class "
                                                  "is in the prediction or the mask")
    median_minutes: float | None = Field(description="median claim-to-upload time per case (renewals included)")
    median_voxels_changed: float | None = Field(description="median number of voxels whose class the annotator "
                                                            "changed from the prediction")


class RankedVsControl(BaseModel):
    model_version: int | None
    model_version_id: int | None
    ranked_minus_control: Estimate = Field(
        description="mean foreground Dice of ranked cases minus that of control cases (Welch 95 % interval); "
                    "negative: the ranking hands out cases the model gets wrong more often than chance")


class AnnotatorSummary(BaseModel):
    user: str
    labels: int
    active_days: int = Field(description="UTC calendar days with at least one submitted label")
    labels_per_day: float = Field(description="labels / active_days")
    median_minutes: float | None


class CampaignReport(BaseModel):
    project_id: int
    generated_at: dt.datetime
    control_fraction: float
    classes: list[str] = Field(description="foreground classes, in the project's order")
    pending: int
    failed: int
    arms: list[ArmSummary]
    ranked_vs_control: list[RankedVsControl]
    annotators: list[AnnotatorSummary]
    explanation: list[str]
