import { describe, expect, it } from "vitest";
import { drawColormap, labelColor } from "../src/labels";
import { autoWindow, CT_PRESETS, heatRange, presetWindow, windowChoices } from "../src/windows";

describe("label colours", () => {
  it("gives every label of a project a distinct colour and a transparent background", () => {
    const names = ["background", ...Array.from({ length: 40 }, (_, i) => `l${i + 1}`)];
    const map = drawColormap(names);
    expect(map.A[0]).toBe(0);
    expect(map.A.slice(1).every((a) => a === 255)).toBe(true);
    expect(map.I).toEqual(names.map((_, i) => i));
    const colours = new Set(names.map((_, i) => labelColor(i).join(",")));
    expect(colours.size).toBe(names.length);
  });
});

describe("display windows", () => {
  it("turns width/level presets into ranges", () => {
    const soft = presetWindow(CT_PRESETS.find((p) => p.id === "soft-tissue")!);
    expect([soft.min, soft.max]).toEqual([-160, 240]);
    const lung = presetWindow(CT_PRESETS.find((p) => p.id === "lung")!);
    expect([lung.min, lung.max]).toEqual([-1350, 150]);
  });

  it("uses the robust range for MR and falls back to the full range", () => {
    expect(autoWindow(10, 90, 0, 1000)).toMatchObject({ min: 10, max: 90 });
    expect(autoWindow(NaN, 90, 0, 1000)).toMatchObject({ min: 0, max: 1000 });
    expect(windowChoices("MR")).toEqual(["auto"]);
    expect(windowChoices("CT")[0]).toBe("soft-tissue");
  });
});

describe("uncertainty heat range", () => {
  it("leaves the lowest 80 % transparent and clips the top outliers", () => {
    const values = Array.from({ length: 1000 }, (_, i) => i);
    const range = heatRange(values);
    expect(range.min).toBe(800);
    expect(range.max).toBe(995);
  });

  it("copes with a constant or empty map", () => {
    expect(heatRange([])).toEqual({ min: 0, max: 1 });
    const flat = heatRange([2, 2, 2]);
    expect(flat.max).toBeGreaterThan(flat.min);
  });
});
