// Keyboard shortcuts of the workspace: one table drives both the key handling and the help panel.

export type Action =
  | "brush" | "eraser" | "fill" | "undo" | "smaller" | "larger" | "toggle-labels" | "toggle-uncertainty"
  | "next-view" | "next-window" | "submit" | "help" | `label-${number}`;

export interface Shortcut {
  keys: string;
  action: Action;
  description: string;
}

export const SHORTCUTS: Shortcut[] = [
  { keys: "B", action: "brush", description: "Brush: paint the selected label" },
  { keys: "E", action: "eraser", description: "Eraser: paint background" },
  { keys: "F", action: "fill", description: "2D fill: draw a closed outline, its inside is filled" },
  { keys: "1 – 9", action: "label-1", description: "Select label 1 to 9" },
  { keys: "[ / ]", action: "smaller", description: "Brush size smaller / larger" },
  { keys: "Ctrl+Z", action: "undo", description: "Undo the last stroke" },
  { keys: "H", action: "toggle-labels", description: "Hide / show the labels" },
  { keys: "U", action: "toggle-uncertainty", description: "Hide / show the model's uncertainty map" },
  { keys: "V", action: "next-view", description: "Next layout: four views, axial, coronal, sagittal, 3D" },
  { keys: "W", action: "next-window", description: "Next window preset (CT) / auto contrast (MR)" },
  { keys: "Ctrl+Enter", action: "submit", description: "Submit the label and open the next case" },
  { keys: "?", action: "help", description: "Show this list" },
];

export interface KeyLike {
  key: string;
  ctrlKey?: boolean;
  metaKey?: boolean;
  altKey?: boolean;
  targetTag?: string;
  /** The type of an <input> target (text, number, checkbox, ...). */
  targetType?: string;
}

const TYPED_INPUTS = new Set(["text", "number", "password", "search", "email", "url", "tel", "date", "time"]);

/**
 * The action for a key press, or null. Keys typed into a text field or a list are the field's; on a checkbox,
 * radio button, slider or button (which keep focus after a click) the shortcuts still work.
 */
export function actionFor(event: KeyLike): Action | null {
  const tag = (event.targetTag ?? "").toUpperCase();
  if (tag === "TEXTAREA" || tag === "SELECT") return null;
  if (tag === "INPUT" && TYPED_INPUTS.has((event.targetType ?? "text").toLowerCase())) return null;
  const ctrl = Boolean(event.ctrlKey || event.metaKey);
  if (event.altKey) return null;
  if (ctrl) {
    if (event.key === "z" || event.key === "Z") return "undo";
    if (event.key === "Enter") return "submit";
    return null;
  }
  if (/^[1-9]$/.test(event.key)) return `label-${Number(event.key)}`;
  switch (event.key.toLowerCase()) {
    case "b": return "brush";
    case "e": return "eraser";
    case "f": return "fill";
    case "[": return "smaller";
    case "]": return "larger";
    case "h": return "toggle-labels";
    case "u": return "toggle-uncertainty";
    case "v": return "next-view";
    case "w": return "next-window";
    case "?": return "help";
    default: return null;
  }
}
