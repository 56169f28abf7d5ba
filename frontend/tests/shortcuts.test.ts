import { describe, expect, it } from "vitest";
import { actionFor, SHORTCUTS } from "../src/shortcuts";

describe("workspace shortcuts", () => {
  it("maps the documented keys", () => {
    expect(actionFor({ key: "b" })).toBe("brush");
    expect(actionFor({ key: "E" })).toBe("eraser");
    expect(actionFor({ key: "3" })).toBe("label-3");
    expect(actionFor({ key: "z", ctrlKey: true })).toBe("undo");
    expect(actionFor({ key: "z", metaKey: true })).toBe("undo");
    expect(actionFor({ key: "Enter", ctrlKey: true })).toBe("submit");
    expect(actionFor({ key: "[" })).toBe("smaller");
    expect(actionFor({ key: "?" })).toBe("help");
  });

  it("leaves keys typed into text fields alone, but not on checkboxes or sliders", () => {
    expect(actionFor({ key: "b", targetTag: "INPUT", targetType: "text" })).toBeNull();
    expect(actionFor({ key: "1", targetTag: "INPUT", targetType: "number" })).toBeNull();
    expect(actionFor({ key: "b", targetTag: "TEXTAREA" })).toBeNull();
    expect(actionFor({ key: "b", targetTag: "INPUT", targetType: "checkbox" })).toBe("brush");
    expect(actionFor({ key: "]", targetTag: "INPUT", targetType: "range" })).toBe("larger");
    expect(actionFor({ key: "h", targetTag: "BUTTON" })).toBe("toggle-labels");
  });

  it("ignores other modifiers and keys", () => {
    expect(actionFor({ key: "b", altKey: true })).toBeNull();
    expect(actionFor({ key: "s", ctrlKey: true })).toBeNull();
    expect(actionFor({ key: "0" })).toBeNull();
    expect(actionFor({ key: "x" })).toBeNull();
  });

  it("documents every action it handles in the help table", () => {
    const documented = new Set(SHORTCUTS.map((s) => s.action));
    for (const key of ["b", "e", "f", "h", "u", "v", "w", "?", "["]) {
      const action = actionFor({ key });
      expect(action && documented.has(action)).toBe(true);
    }
  });
});
