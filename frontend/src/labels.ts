// Label colours: one distinct colour per project label, the same in the tool panel and in the viewer.

export type RGB = [number, number, number];

// Well-separated hues (after ITK-SNAP's and 3D Slicer's first label colours); index 0 is background.
const PALETTE: RGB[] = [
  [0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48], [145, 30, 180],
  [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212], [0, 128, 128], [220, 190, 255],
  [170, 110, 40], [255, 250, 200], [128, 0, 0], [170, 255, 195], [128, 128, 0], [255, 215, 180], [0, 0, 128],
];

/** The colour of label value `value` (values past the palette get a deterministic hue of their own). */
export function labelColor(value: number): RGB {
  if (value < PALETTE.length) return PALETTE[value];
  const hue = (value * 137.508) % 360; // golden angle: neighbours stay apart
  return hslToRgb(hue, 0.75, 0.5);
}

export function cssColor(value: number): string {
  const [r, g, b] = labelColor(value);
  return `rgb(${r}, ${g}, ${b})`;
}

/** NiiVue's label colour map for the drawing layer: transparent background, one opaque colour per label. */
export interface DrawColormap {
  R: number[];
  G: number[];
  B: number[];
  A: number[];
  I: number[];
  labels: string[];
}

export function drawColormap(names: string[]): DrawColormap {
  const map: DrawColormap = { R: [], G: [], B: [], A: [], I: [], labels: [] };
  names.forEach((name, value) => {
    const [r, g, b] = labelColor(value);
    map.R.push(r);
    map.G.push(g);
    map.B.push(b);
    map.A.push(value === 0 ? 0 : 255);
    map.I.push(value);
    map.labels.push(name);
  });
  return map;
}

function hslToRgb(h: number, s: number, l: number): RGB {
  const k = (n: number) => (n + h / 30) % 12;
  const a = s * Math.min(l, 1 - l);
  const f = (n: number) => l - a * Math.max(-1, Math.min(k(n) - 3, Math.min(9 - k(n), 1)));
  return [Math.round(255 * f(0)), Math.round(255 * f(8)), Math.round(255 * f(4))];
}
