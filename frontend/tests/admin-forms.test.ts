import { describe, expect, it } from "vitest";
import { CYCLE_FIELDS, cyclePayload, formValues, numberOrText } from "../src/admin/cycleForm";
import { parseLabels, projectPayload, settingsPatch } from "../src/admin/projectForm";
import type { Project } from "../src/types";

describe("cycle form → request body", () => {
  it("sends only the filled fields, typed", () => {
    expect(cyclePayload({ steps: "60", learning_rate: "0.01", patch_size: "16, 16,16", channels: "8,16", strides: "2",
      augment: "false", strategy: "mc_dropout_variance", seed: "", mc_passes: " " })).toEqual({
      steps: 60, learning_rate: 0.01, patch_size: [16, 16, 16], channels: [8, 16], strides: [2], augment: false,
      strategy: "mc_dropout_variance",
    });
  });

  it("sends nothing for an empty form (every value the server's default)", () => {
    expect(cyclePayload({})).toEqual({});
  });

  it("keeps one patch side as a number and accepts 96x96x64", () => {
    expect(cyclePayload({ patch_size: "32" })).toEqual({ patch_size: 32 });
    expect(cyclePayload({ patch_size: "96x96x64" })).toEqual({ patch_size: [96, 96, 64] });
  });

  it("does not judge values: what is not a number goes as typed, for the server to refuse", () => {
    expect(cyclePayload({ steps: "many", mc_passes: "1", learning_rate: "1e-3", channels: "8,a" }))
      .toEqual({ steps: "many", mc_passes: 1, learning_rate: 0.001, channels: [8, "a"] });
    expect(numberOrText("-2.5")).toBe(-2.5);
    expect(numberOrText("0x10")).toBe("0x10");
  });

  it("refills the form from a cycle's parameters", () => {
    const values = formValues({ steps: 60, patch_size: [16, 16, 16], augment: false, strategy: "random", epochs: null, num_res_units: 1 });
    expect(values).toEqual({ steps: "60", patch_size: "16,16,16", augment: "false", strategy: "random" });
    expect(cyclePayload(values)).toEqual({ steps: 60, patch_size: [16, 16, 16], augment: false, strategy: "random" });
  });

  it("has one field per CycleCreate parameter, each named once", () => {
    const names = CYCLE_FIELDS.map((f) => f.name);
    expect(new Set(names).size).toBe(names.length);
    expect(names).toContain("mc_passes");
    expect(names).toContain("warm_start");
  });
});

describe("project forms", () => {
  it("reads label names one per line, trimmed, without blank lines", () => {
    expect(parseLabels("background\n  lesion \r\n\norgan\n")).toEqual(["background", "lesion", "organ"]);
    expect(projectPayload(" liver ", "CT", "background\nliver")).toEqual({ name: "liver", modality: "CT", labels: ["background", "liver"] });
  });

  const project: Project = { id: 1, name: "p", modality: "CT", labels: ["background", "a"], created_at: "", current_ranking_id: null,
    control_fraction: 0.1, annotators_can_upload_cases: false, train_on: "submitted", readers_per_case: 1, consensus_method: "staple" };

  it("patches only the settings that changed", () => {
    const same = { control_fraction: "0.1", train_on: "submitted", readers_per_case: "1", consensus_method: "staple", annotators_can_upload_cases: false };
    expect(settingsPatch(project, same)).toEqual({});
    expect(settingsPatch(project, { ...same, control_fraction: "0.2", readers_per_case: "2", annotators_can_upload_cases: true }))
      .toEqual({ control_fraction: 0.2, readers_per_case: 2, annotators_can_upload_cases: true });
    expect(settingsPatch(project, { ...same, control_fraction: "lots" })).toEqual({ control_fraction: "lots" });
  });
});
