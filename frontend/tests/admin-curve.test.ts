import { describe, expect, it } from "vitest";
import { curveRows, learningCurve } from "../src/admin/curveData";
import type { ModelVersion } from "../src/admin/types";

function model(version: number, trained: number, perClass: Record<string, number | null> | undefined, test?: Record<string, number>): ModelVersion {
  return {
    id: 100 + version, project_id: 1, version, cycle_id: 10 + version, params: {}, created_at: "2026-01-01T00:00:00Z",
    trained_case_ids: Array.from({ length: trained }, (_, i) => i + 1),
    metrics: {
      validation_cases: perClass ? 2 : 0, per_class: perClass ?? {}, mean_dice: null,
      ...(test ? { test: { cases: 3, per_class: test, mean_dice: null } } : {}),
    },
  };
}

const LABELS = ["background", "lesion", "organ"];

describe("learning curve series", () => {
  it("gives one validation point per model version per foreground class, x = labelled cases trained on", () => {
    const series = learningCurve([
      model(2, 8, { background: 0.99, lesion: 0.6, organ: 0.7 }),
      model(1, 4, { background: 0.98, lesion: 0.3, organ: 0.5 }),
    ], LABELS);
    expect(series.map((s) => s.label)).toEqual(["lesion (validation)", "organ (validation)"]);
    expect(series[0].points).toEqual([{ x: 4, y: 0.3, cycleId: 11, version: 1 }, { x: 8, y: 0.6, cycleId: 12, version: 2 }]);
    expect(series[1].points.map((p) => p.y)).toEqual([0.5, 0.7]);
  });

  it("adds test series only where test Dice exists, and leaves out the background", () => {
    const series = learningCurve([model(1, 4, { lesion: 0.3, organ: 0.5 }), model(2, 6, { lesion: 0.4, organ: 0.6 }, { lesion: 0.35, organ: 0.55 })], LABELS);
    expect(series.map((s) => `${s.className}/${s.split}`)).toEqual(["lesion/validation", "organ/validation", "lesion/test", "organ/test"]);
    expect(series[2].points).toEqual([{ x: 6, y: 0.35, cycleId: 12, version: 2 }]);
    expect(series.some((s) => s.className === "background")).toBe(false);
  });

  it("skips models without validation cases and missing or null class values", () => {
    expect(learningCurve([model(1, 4, undefined)], LABELS)).toEqual([]);
    const series = learningCurve([model(1, 4, { lesion: null, organ: 0.5 })], LABELS);
    expect(series.map((s) => s.className)).toEqual(["organ"]);
  });

  it("keeps two cycles with the same number of cases as two points, in version order", () => {
    const series = learningCurve([model(2, 4, { lesion: 0.5 }), model(1, 4, { lesion: 0.3 })], LABELS);
    expect(series[0].points.map((p) => [p.x, p.version])).toEqual([[4, 1], [4, 2]]);
  });

  it("turns the series into one table row per model version", () => {
    const series = learningCurve([model(1, 4, { lesion: 0.3, organ: 0.5 }), model(2, 6, { lesion: 0.4 }, { lesion: 0.35 })], LABELS);
    const rows = curveRows(series);
    expect(rows).toEqual([
      { x: 4, version: 1, cycleId: 11, values: [0.3, 0.5, null] },
      { x: 6, version: 2, cycleId: 12, values: [0.4, null, 0.35] },
    ]);
  });
});
