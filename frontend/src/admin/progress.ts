// A cycle's state in words (CyclePublic: status, phase, progress, metrics, error), and how far its phase is.
import type { Cycle } from "./types";

export const ACTIVE_STATUSES: readonly string[] = ["queued", "running"];

export function isActive(cycle: Pick<Cycle, "status">): boolean {
  return ACTIVE_STATUSES.includes(cycle.status);
}

export interface ProgressView {
  /** One line for people: "train: step 30 of 60, loss 0.532". */
  text: string;
  /** 0..1 for a progress bar; null when the phase has no measure (evaluate, publish, queued) or it ended. */
  fraction: number | null;
}

function num(value: unknown): number | null {
  return typeof value === "number" && Number.isFinite(value) ? value : null;
}

export function cycleProgress(cycle: Cycle): ProgressView {
  const p = cycle.progress ?? {};
  const cancelling = cycle.cancel_requested && isActive(cycle) ? " (cancel requested)" : "";
  switch (cycle.status) {
    case "queued":
      return { text: `queued: waiting for the worker${cancelling}`, fraction: null };
    case "done": {
      const mean = num(cycle.metrics?.mean_dice);
      const test = num(cycle.metrics?.test?.mean_dice);
      const parts = ["done"];
      if (mean !== null) parts.push(`validation mean Dice ${mean.toFixed(3)}`);
      if (test !== null) parts.push(`test mean Dice ${test.toFixed(3)}`);
      return { text: parts.length > 1 ? `${parts[0]}: ${parts.slice(1).join(", ")}` : parts[0], fraction: 1 };
    }
    case "failed":
    case "cancelled":
      return { text: `${cycle.status}${cycle.error ? `: ${cycle.error}` : ""}`, fraction: null };
    case "running":
      break;
    default:
      return { text: cycle.status, fraction: null };
  }
  const phase = cycle.phase ?? "starting";
  if (phase === "train") {
    const step = num(p.step), steps = num(p.steps), loss = num(p.loss);
    if (step === null || steps === null) return { text: `train: preparing${cancelling}`, fraction: 0 };
    const lossText = loss === null ? "" : `, loss ${loss.toFixed(4)}`;
    const cases = num(p.train_cases);
    const casesText = cases === null ? "" : ` (${cases} labelled case${cases === 1 ? "" : "s"})`;
    return { text: `train: step ${step} of ${steps}${lossText}${casesText}${cancelling}`, fraction: steps > 0 ? Math.min(1, step / steps) : null };
  }
  if (phase === "score") {
    const scored = num(p.scored), total = num(p.total);
    if (scored === null || total === null) return { text: `score: preparing${cancelling}`, fraction: 0 };
    return { text: `score: ${scored} of ${total} cases scored${cancelling}`, fraction: total > 0 ? Math.min(1, scored / total) : 1 };
  }
  if (phase === "evaluate") {
    return { text: `evaluate: Dice on the validation and test cases${cancelling}`, fraction: null };
  }
  if (phase === "publish") return { text: `publish: writing the model version and the ranking${cancelling}`, fraction: null };
  return { text: `${phase}${cancelling}`, fraction: null };
}
