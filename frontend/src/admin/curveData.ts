// Learning curve data: per-class Dice of each model version against the number of labelled cases it was trained
// on. One model version is published per completed cycle, so one point per completed cycle and split.
import type { ModelVersion, SplitMetrics } from "./types";

export interface CurvePoint {
  /** Labelled cases the model was trained on. */
  x: number;
  /** Dice of the class on the split. */
  y: number;
  cycleId: number;
  version: number;
}

export interface CurveSeries {
  className: string;
  split: "validation" | "test";
  label: string;
  points: CurvePoint[];
}

function finite(value: unknown): value is number {
  return typeof value === "number" && Number.isFinite(value);
}

function points(models: ModelVersion[], className: string, metricsOf: (m: ModelVersion) => SplitMetrics | undefined): CurvePoint[] {
  const out: CurvePoint[] = [];
  for (const model of models) {
    const value = metricsOf(model)?.per_class?.[className];
    if (finite(value)) out.push({ x: model.trained_case_ids.length, y: value, cycleId: model.cycle_id, version: model.version });
  }
  return out.sort((a, b) => a.x - b.x || a.version - b.version);
}

/**
 * Series for each foreground class: validation Dice (the cycle's top-level metrics), then test Dice where any model
 * was evaluated on test cases. Series with no point (no validation case yet) are left out.
 *
 * @param labels the project's label names, index 0 the background (not plotted: near 1 whatever the model does).
 */
export function learningCurve(models: ModelVersion[], labels: readonly string[]): CurveSeries[] {
  const series: CurveSeries[] = [];
  for (const split of ["validation", "test"] as const) {
    for (const className of labels.slice(1)) {
      const metricsOf = split === "validation" ? (m: ModelVersion) => m.metrics : (m: ModelVersion) => m.metrics.test;
      const found = points(models, className, metricsOf);
      if (found.length) series.push({ className, split, label: `${className} (${split})`, points: found });
    }
  }
  return series;
}

/** Rows for the table beside the chart: one per model version, a Dice column per series. */
export interface CurveRow {
  x: number;
  version: number;
  cycleId: number;
  values: Array<number | null>;
}

export function curveRows(series: CurveSeries[]): CurveRow[] {
  const rows = new Map<number, CurveRow>();
  series.forEach((s, index) => {
    for (const p of s.points) {
      const row = rows.get(p.version) ?? { x: p.x, version: p.version, cycleId: p.cycleId, values: series.map(() => null) };
      row.values[index] = p.y;
      rows.set(p.version, row);
    }
  });
  return [...rows.values()].sort((a, b) => a.x - b.x || a.version - b.version);
}
