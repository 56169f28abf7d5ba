// The cycle start form's fields (CycleCreate in app/cycles/schemas.py) and the form → request body mapping.
//
// The server is the only judge of a value: an empty field is left out (the server's default), a number is sent
// as a number, and anything that does not read as one is sent as typed so the server's 422 says what is wrong.

export type CycleFieldKind = "int" | "float" | "ints" | "intOrInts" | "bool" | "choice" | "text";

export interface CycleField {
  name: string;
  label: string;
  kind: CycleFieldKind;
  hint: string;
  /** choice: the schema's literal values; text: suggestions (a datalist), not a restriction. */
  options?: readonly string[];
}

// Strategy names registered on the worker (worker/ml/params.py STRATEGY_NAMES): offered, not enforced here.
export const STRATEGY_SUGGESTIONS = ["random", "mc_dropout_variance", "mc_dropout_variance_fg", "entropy", "bald",
  "coreset", "stratified_power"] as const;

export const CYCLE_FIELDS: readonly CycleField[] = [
  { name: "strategy", label: "Strategy", kind: "text", hint: "how the next cases are ranked (default random)", options: STRATEGY_SUGGESTIONS },
  { name: "steps", label: "Steps", kind: "int", hint: "optimiser steps per training run" },
  { name: "learning_rate", label: "Learning rate", kind: "float", hint: "peak Adam learning rate" },
  { name: "lr_schedule", label: "LR schedule", kind: "choice", hint: "poly or constant", options: ["poly", "constant"] },
  { name: "batch_size", label: "Batch size", kind: "int", hint: "patches per step" },
  { name: "patch_size", label: "Patch size", kind: "intOrInts", hint: "D,H,W or one side, e.g. 96,96,96" },
  { name: "samples_per_volume", label: "Samples per volume", kind: "int", hint: "patches per case per epoch" },
  { name: "val_every", label: "Validate every", kind: "int", hint: "steps; 0: at the end only" },
  { name: "augment", label: "Augment", kind: "bool", hint: "random affine, intensity, noise" },
  { name: "flip_axes", label: "Flip axes", kind: "ints", hint: "patch axes flipped at random, e.g. 0,1" },
  { name: "channels", label: "Channels", kind: "ints", hint: "UNet features per level, e.g. 16,32,64,128" },
  { name: "strides", label: "Strides", kind: "ints", hint: "one fewer than channels, e.g. 2,2,2" },
  { name: "dropout", label: "Dropout", kind: "float", hint: "p in [0, 1)" },
  { name: "dropout_position", label: "Dropout position", kind: "choice", hint: "all or decoder", options: ["all", "decoder"] },
  { name: "mc_passes", label: "MC passes", kind: "int", hint: "T, Monte-Carlo dropout passes" },
  { name: "sw_overlap", label: "Window overlap", kind: "float", hint: "sliding-window overlap in [0, 1)" },
  { name: "score_whole_volume_voxels", label: "Whole-volume voxels", kind: "int", hint: "decoder dropout only; 0: sliding windows" },
  { name: "score_precision", label: "Score precision", kind: "choice", hint: "auto: bfloat16 where the device has it", options: ["auto", "float32"] },
  { name: "query_size", label: "Query size", kind: "int", hint: "cases per annotation round" },
  { name: "temperature", label: "Temperature", kind: "float", hint: "0: greedy top-k" },
  { name: "temperature_decay", label: "Temperature decay", kind: "float", hint: "factor per model version" },
  { name: "seed", label: "Seed", kind: "int", hint: "training and dropout masks" },
  { name: "warm_start", label: "Warm start", kind: "bool", hint: "start from the last model's weights" },
];

const NUMBER = /^[-+]?(\d+\.?\d*|\.\d+)(e[-+]?\d+)?$/i;

/** A number when the text reads as one, else the text itself (the server's validation then names the field). */
export function numberOrText(text: string): number | string {
  const value = text.trim();
  return NUMBER.test(value) ? Number(value) : value;
}

function listOf(text: string): Array<number | string> {
  return text.split(/[\s,;x×]+/).filter(Boolean).map(numberOrText);
}

/** The request body for POST /projects/{id}/cycles: only the fields the admin filled in. */
export function cyclePayload(values: Record<string, string>, fields: readonly CycleField[] = CYCLE_FIELDS): Record<string, unknown> {
  const body: Record<string, unknown> = {};
  for (const field of fields) {
    const raw = (values[field.name] ?? "").trim();
    if (raw === "") continue;
    switch (field.kind) {
      case "int":
      case "float":
        body[field.name] = numberOrText(raw);
        break;
      case "ints":
        body[field.name] = listOf(raw);
        break;
      case "intOrInts": {
        const items = listOf(raw);
        body[field.name] = items.length === 1 ? items[0] : items;
        break;
      }
      case "bool":
        body[field.name] = raw === "true" ? true : raw === "false" ? false : raw;
        break;
      case "choice":
      case "text":
        body[field.name] = raw;
        break;
    }
  }
  return body;
}

/** Form values that fill the form with a parameter set (the inverse of cyclePayload, for "same as cycle N"). */
export function formValues(params: Record<string, unknown>, fields: readonly CycleField[] = CYCLE_FIELDS): Record<string, string> {
  const values: Record<string, string> = {};
  for (const field of fields) {
    const value = params[field.name];
    if (value === undefined || value === null) continue;
    values[field.name] = Array.isArray(value) ? value.join(",") : String(value);
  }
  return values;
}
