// Display windows: CT presets in Hounsfield units (width / level, as radiologists name them), MR auto contrast.

export interface DisplayWindow {
  name: string;
  min: number;
  max: number;
}

export interface Preset {
  id: string;
  name: string;
  width: number;
  level: number;
}

export const CT_PRESETS: Preset[] = [
  { id: "soft-tissue", name: "Soft tissue", width: 400, level: 40 },
  { id: "bone", name: "Bone", width: 1800, level: 400 },
  { id: "lung", name: "Lung", width: 1500, level: -600 },
];

export function presetWindow(preset: Preset): DisplayWindow {
  return { name: preset.name, min: preset.level - preset.width / 2, max: preset.level + preset.width / 2 };
}

/**
 * MR has no absolute scale: contrast from the volume's own robust range (2nd to 98th percentile of its
 * intensities, which NiiVue computes on load), so a few very bright voxels do not wash the image out.
 */
export function autoWindow(robustMin: number, robustMax: number, globalMin: number, globalMax: number): DisplayWindow {
  const ok = Number.isFinite(robustMin) && Number.isFinite(robustMax) && robustMax > robustMin;
  return ok ? { name: "Auto", min: robustMin, max: robustMax } : { name: "Auto", min: globalMin, max: globalMax };
}

/** The presets offered for a modality, in the order W cycles through them. */
export function windowChoices(modality: string): string[] {
  return modality === "CT" ? [...CT_PRESETS.map((p) => p.id), "auto"] : ["auto"];
}

/**
 * The heat overlay's range for an uncertainty map: the lowest 80 % of voxels are transparent (below the range),
 * so the overlay marks where the model is unsure instead of tinting the whole volume.
 */
export function heatRange(values: ArrayLike<number>, maxSamples = 200_000): { min: number; max: number } {
  const step = Math.max(1, Math.floor(values.length / maxSamples));
  const sample: number[] = [];
  for (let i = 0; i < values.length; i += step) {
    const value = values[i];
    if (Number.isFinite(value)) sample.push(value);
  }
  if (sample.length === 0) return { min: 0, max: 1 };
  sample.sort((a, b) => a - b);
  const at = (q: number) => sample[Math.min(sample.length - 1, Math.floor(q * sample.length))];
  const max = at(0.995);
  const min = at(0.8);
  return max > min ? { min, max } : { min: sample[0], max: sample[sample.length - 1] > sample[0] ? sample[sample.length - 1] : sample[0] + 1 };
}
