// Project creation and settings: form values → request bodies. The server validates (names, labels, ranges).
import { numberOrText } from "./cycleForm";
import type { Project } from "../types";

/** One label name per line; surrounding spaces and blank lines are dropped, the order is the voxel value. */
export function parseLabels(text: string): string[] {
  return text.split(/\r?\n/).map((line) => line.trim()).filter(Boolean);
}

export function projectPayload(name: string, modality: string, labelsText: string): Record<string, unknown> {
  return { name: name.trim(), modality, labels: parseLabels(labelsText) };
}

export type SettingsForm = {
  control_fraction: string;
  train_on: string;
  readers_per_case: string;
  consensus_method: string;
  annotators_can_upload_cases: boolean;
};

/** The PATCH /projects/{id} body: only the settings that differ from the project's current ones. */
export function settingsPatch(current: Project, form: SettingsForm): Record<string, unknown> {
  const patch: Record<string, unknown> = {};
  const fraction = numberOrText(form.control_fraction);
  if (form.control_fraction.trim() !== "" && fraction !== current.control_fraction) patch.control_fraction = fraction;
  if (form.train_on !== current.train_on) patch.train_on = form.train_on;
  const readers = numberOrText(form.readers_per_case);
  if (form.readers_per_case.trim() !== "" && readers !== current.readers_per_case) patch.readers_per_case = readers;
  if (form.consensus_method !== current.consensus_method) patch.consensus_method = form.consensus_method;
  if (form.annotators_can_upload_cases !== current.annotators_can_upload_cases) {
    patch.annotators_can_upload_cases = form.annotators_can_upload_cases;
  }
  return patch;
}
