"""The campaign report: effort records grouped per (model version, arm) and per annotator."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from app.campaign import stats
from app.campaign.draw import ARMS
from app.campaign.schemas import AnnotatorSummary, ArmSummary, CampaignReport, Estimate, RankedVsControl
from app.models import LabelEffort, Project, utcnow

ARM_ORDER = (*ARMS, "no_lease", "unrecorded")

EXPLANATION = [
    "Pre-segmentation Dice: for each submitted label, the Dice between the model's prediction served when the case "
    "was claimed and the submitted mask, per class (1 = the prediction was kept unchanged). It measures agreement "
    "with masks made by editing that prediction, which is higher than agreement with independent masks would be "
    "(annotators anchor on what they are shown).",
    "The control arm estimates the current model: a control claim takes a uniform random draw from the open cases "
    "instead of the ranking, so the mean pre-segmentation Dice on control cases is an unbiased estimate of the "
    "model's Dice on the unlabelled pool at that time; per model version it is a live learning curve that needs no "
    "test set. Other arms are not: the ranking picks the cases it is least sure about.",
    "ranked minus control shows whether the ranking finds the cases the model gets wrong: clearly negative means "
    "ranked cases get worse pre-segmentations than random ones; an interval around 0 means no evidence that it does.",
    "Intervals are 95 % Student-t intervals over cases (Welch for the difference), cut to the range a Dice can take "
    "and null with fewer than 2 cases; with few cases they are wide and, for bounded values such as Dice, "
    "approximate.",
    "Working minutes run from the claim to the label upload of that lease (renewals included), so they include any "
    "pause while the lease was held. Voxels changed: voxels whose class differs between prediction and mask.",
]

Key = tuple[int | None, int | None, str]  # model version number, model version id, arm


def build(project: Project, rows: list[tuple[LabelEffort, int | None, str]]) -> CampaignReport:
    classes = list(project.labels[1:])
    groups: dict[Key, list[LabelEffort]] = defaultdict(list)
    for effort, version, _ in rows:
        groups[(version, effort.model_version_id, _arm(effort))].append(effort)
    arms = [_arm_summary(key, groups[key], classes) for key in sorted(groups, key=_order)]
    efforts = [effort for effort, _, _ in rows]
    return CampaignReport(
        project_id=project.id, generated_at=utcnow(), control_fraction=project.control_fraction, classes=classes,
        pending=sum(e.status == "pending" for e in efforts), failed=sum(e.status == "failed" for e in efforts),
        arms=arms, ranked_vs_control=_ranked_vs_control(groups, classes), annotators=_annotators(rows),
        explanation=EXPLANATION)


def _arm(effort: LabelEffort) -> str:
    if effort.lease_id is None:
        return "no_lease"
    return effort.arm or "unrecorded"


def _order(key: Key) -> tuple[int, int]:
    version, _, arm = key
    return (-1 if version is None else version, ARM_ORDER.index(arm))


def case_mean_dice(effort: LabelEffort, classes: list[str]) -> float | None:
    """Mean Dice over the foreground classes present in the prediction or the mask of one case."""
    if effort.status != "done" or not effort.dice:
        return None
    values = [effort.dice[c] for c in classes if effort.dice.get(c) is not None]
    return sum(values) / len(values) if values else None


def _estimate(values: Iterable[float | None]) -> Estimate:
    return _bounded(stats.mean_ci([v for v in values if v is not None]), 0.0, 1.0)


def _bounded(e: stats.Estimate, lowest: float, highest: float) -> Estimate:
    """The interval cut to the values the mean can take (a Dice is in [0, 1]); a t-interval over few cases
    can reach past them, and cutting it there loses no coverage."""
    def clip(v: float | None) -> float | None:
        return None if v is None else min(highest, max(lowest, v))

    return Estimate(n=e.n, mean=e.mean, ci_low=clip(e.low), ci_high=clip(e.high))


def _arm_summary(key: Key, efforts: list[LabelEffort], classes: list[str]) -> ArmSummary:
    version, version_id, arm = key
    done = [e for e in efforts if e.status == "done" and e.dice is not None]
    minutes = [e.working_s / 60 for e in efforts if e.working_s is not None]
    return ArmSummary(
        model_version=version, model_version_id=version_id, arm=arm, labels=len(efforts), compared=len(done),
        pending=sum(e.status == "pending" for e in efforts),
        mean_foreground_dice=_estimate(case_mean_dice(e, classes) for e in done),
        dice={c: _estimate((e.dice or {}).get(c) for e in done) for c in classes},
        median_minutes=stats.median(minutes),
        median_voxels_changed=stats.median([float(e.voxels_changed) for e in done if e.voxels_changed is not None]))


def _ranked_vs_control(groups: dict[Key, list[LabelEffort]], classes: list[str]) -> list[RankedVsControl]:
    out = []
    versions = sorted({(v, vid) for v, vid, _ in groups if v is not None})
    for version, version_id in versions:
        ranked, control = ([d for e in groups.get((version, version_id, arm), [])
                            if (d := case_mean_dice(e, classes)) is not None] for arm in ("ranked", "control"))
        if not ranked or not control:
            continue
        out.append(RankedVsControl(model_version=version, model_version_id=version_id,
                                   ranked_minus_control=_bounded(stats.difference_ci(ranked, control), -1.0, 1.0)))
    return out


def _annotators(rows: list[tuple[LabelEffort, int | None, str]]) -> list[AnnotatorSummary]:
    by_user: dict[str, list[LabelEffort]] = defaultdict(list)
    for effort, _, name in rows:
        by_user[name].append(effort)
    out = []
    for name in sorted(by_user):
        efforts = by_user[name]
        days = len({e.created_at.date() for e in efforts})
        minutes = [e.working_s / 60 for e in efforts if e.working_s is not None]
        out.append(AnnotatorSummary(user=name, labels=len(efforts), active_days=days,
                                    labels_per_day=len(efforts) / days, median_minutes=stats.median(minutes)))
    return out


def to_csv(report: CampaignReport) -> str:
    """One row per (model version, arm), the columns of ArmSummary with each estimate spread over four."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=_columns(report.classes), lineterminator="\n")
    writer.writeheader()
    writer.writerows(_csv_row(arm, report.classes) for arm in report.arms)
    return buffer.getvalue()


def _estimated(classes: list[str]) -> list[str]:
    return ["mean_foreground_dice", *(f"dice_{c}" for c in classes)]


def _columns(classes: list[str]) -> list[str]:
    columns = ["model_version", "model_version_id", "arm", "labels", "compared", "pending"]
    for name in _estimated(classes):
        columns += [f"{name}_n", name, f"{name}_ci_low", f"{name}_ci_high"]
    return [*columns, "median_minutes", "median_voxels_changed"]


def _csv_row(arm: ArmSummary, classes: list[str]) -> dict[str, Any]:
    row: dict[str, Any] = {"model_version": arm.model_version, "model_version_id": arm.model_version_id,
                           "arm": arm.arm, "labels": arm.labels, "compared": arm.compared, "pending": arm.pending,
                           "median_minutes": arm.median_minutes, "median_voxels_changed": arm.median_voxels_changed}
    estimates = [arm.mean_foreground_dice, *(arm.dice[c] for c in classes)]
    for name, estimate in zip(_estimated(classes), estimates, strict=True):
        row.update({f"{name}_n": estimate.n, name: estimate.mean, f"{name}_ci_low": estimate.ci_low,
                    f"{name}_ci_high": estimate.ci_high})
    return row
