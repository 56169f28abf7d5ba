import { describe, expect, it } from "vitest";
import { formatEstimate, uploadProgressText } from "../src/admin/format";
import { pageInfo } from "../src/admin/pagination";
import { cycleProgress, isActive } from "../src/admin/progress";
import type { Cycle } from "../src/admin/types";

function cycle(values: Partial<Cycle>): Cycle {
  return { id: 1, project_id: 1, status: "running", phase: null, strategy: "random", warm_start: false, params: {}, progress: {},
    timings: {}, metrics: {}, error: null, cancel_requested: false, model_version_id: null, ranking_id: null,
    created_at: "", started_at: null, finished_at: null, heartbeat_at: null, ...values };
}

describe("cycle progress in words", () => {
  it("says the training step, the loss and the labelled cases", () => {
    const view = cycleProgress(cycle({ phase: "train", progress: { step: 30, steps: 60, loss: 0.53219, train_cases: 3 } }));
    expect(view.text).toBe("train: step 30 of 60, loss 0.5322 (3 labelled cases)");
    expect(view.fraction).toBe(0.5);
  });

  it("reads the score phase's scored / total, not the old training figures", () => {
    const view = cycleProgress(cycle({ phase: "score", progress: { step: 60, steps: 60, scored: 1, total: 4 } }));
    expect(view).toEqual({ text: "score: 1 of 4 cases scored", fraction: 0.25 });
  });

  it("handles a phase that has not reported yet and the phases without a measure", () => {
    expect(cycleProgress(cycle({ phase: "train" })).text).toBe("train: preparing");
    expect(cycleProgress(cycle({ phase: "evaluate" })).fraction).toBeNull();
    expect(cycleProgress(cycle({ status: "queued" })).text).toBe("queued: waiting for the worker");
    expect(cycleProgress(cycle({ phase: "train", cancel_requested: true })).text).toBe("train: preparing (cancel requested)");
  });

  it("ends with done and the Dice, or the error", () => {
    expect(cycleProgress(cycle({ status: "done", phase: "publish", metrics: { mean_dice: 0.81234, test: { mean_dice: 0.7 } } })).text)
      .toBe("done: validation mean Dice 0.812, test mean Dice 0.700");
    expect(cycleProgress(cycle({ status: "done", metrics: { mean_dice: null } })).text).toBe("done");
    expect(cycleProgress(cycle({ status: "failed", error: "train failed: no labelled case" })).text).toBe("failed: train failed: no labelled case");
    expect(isActive(cycle({ status: "queued" }))).toBe(true);
    expect(isActive(cycle({ status: "cancelled" }))).toBe(false);
  });
});

describe("pagination", () => {
  it("with a total", () => {
    expect(pageInfo(0, 25, 25, 60)).toMatchObject({ text: "1–25 of 60", hasPrev: false, hasNext: true, nextOffset: 25 });
    expect(pageInfo(50, 25, 10, 60)).toMatchObject({ text: "51–60 of 60", hasPrev: true, hasNext: false, prevOffset: 25 });
  });

  it("without a total: next while pages come back full", () => {
    expect(pageInfo(0, 25, 25, null)).toMatchObject({ text: "1–25", hasNext: true });
    expect(pageInfo(25, 25, 3, null)).toMatchObject({ text: "26–28", hasNext: false });
  });

  it("an empty table", () => {
    expect(pageInfo(0, 25, 0, 0)).toMatchObject({ text: "none", hasPrev: false, hasNext: false });
  });
});

describe("numbers in words", () => {
  it("upload progress", () => {
    expect(uploadProgressText(512 * 1024, 2 * 1024 * 1024)).toBe("512.0 KB of 2.0 MB (25 %)");
    expect(uploadProgressText(2048, 2048)).toBe("2.0 KB sent; the server is reading the image…");
    expect(uploadProgressText(100, null)).toBe("100 B sent");
  });

  it("estimates with their interval", () => {
    expect(formatEstimate({ n: 12, mean: 0.8123, ci_low: 0.7, ci_high: 0.92 })).toBe("0.812 [0.700, 0.920], n = 12");
    expect(formatEstimate({ n: 1, mean: 0.5, ci_low: null, ci_high: null })).toBe("0.500, n = 1");
    expect(formatEstimate({ n: 0, mean: null, ci_low: null, ci_high: null })).toBe("– (n = 0)");
  });
});
