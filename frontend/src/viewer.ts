// The one module that knows NiiVue: the rest of the app asks for views, tools and the drawing through it,
// so the viewer can be swapped without touching the workspace.
import { Niivue, NVImage, SHOW_RENDER, SLICE_TYPE, MULTIPLANAR_TYPE } from "@niivue/niivue";
import { drawColormap } from "./labels";
import { autoWindow, CT_PRESETS, heatRange, presetWindow, type DisplayWindow } from "./windows";

export type Layout = "multi" | "axial" | "coronal" | "sagittal" | "3d";
export const LAYOUTS: Layout[] = ["multi", "axial", "coronal", "sagittal", "3d"];
export type Tool = "brush" | "eraser" | "fill" | "navigate";

const SLICE: Record<Layout, SLICE_TYPE> = {
  multi: SLICE_TYPE.MULTIPLANAR, axial: SLICE_TYPE.AXIAL, coronal: SLICE_TYPE.CORONAL,
  sagittal: SLICE_TYPE.SAGITTAL, "3d": SLICE_TYPE.RENDER,
};

export interface LoadedCase {
  image: ArrayBuffer;
  /** The model's pre-segmentation, or null: the drawing then starts empty. */
  prediction: ArrayBuffer | null;
  labels: string[];
}

export class Viewer {
  private readonly nv: Niivue;
  private tool: Tool = "brush";
  private label = 1;
  private labelsVisible = true;
  private uncertainty: NVImage | null = null;
  private uncertaintyVisible = false;
  private edits = 0;
  layout: Layout = "multi";

  /** The canvas must already be in the document (NiiVue sizes it from its parent). */
  static async create(canvas: HTMLCanvasElement, onLocation: (text: string) => void): Promise<Viewer> {
    const viewer = new Viewer(canvas, onLocation);
    await viewer.nv.attachToCanvas(canvas);
    return viewer;
  }

  private constructor(canvas: HTMLCanvasElement, onLocation: (text: string) => void) {
    this.nv = new Niivue({
      backColor: [0, 0, 0, 1], show3Dcrosshair: true, isColorbar: false, dragAndDropEnabled: false,
      multiplanarShowRender: SHOW_RENDER.ALWAYS, multiplanarLayout: MULTIPLANAR_TYPE.GRID, logLevel: "warn",
      penSize: 3, maxDrawUndoBitmaps: 32, crosshairWidth: 1, crosshairColor: [0.2, 0.8, 1, 0.7],
      // Annotators label voxels: show them as voxels, not interpolated.
      isNearestInterpolation: true,
    });
    this.nv.onLocationChange = (location: unknown) => {
      const data = location as { string?: string };
      onLocation(data.string ?? "");
    };
    // Every stroke ends with a mouse-up on the canvas: count it as an edit (for "unsaved changes").
    canvas.addEventListener("pointerup", () => {
      if (this.tool !== "navigate") this.edits += 1;
    });
  }

  async load(data: LoadedCase): Promise<void> {
    this.clear();
    const image = await NVImage.loadFromUrl({ url: "case.nii.gz", name: "case.nii.gz", buffer: data.image, colormap: "gray" });
    this.nv.addVolume(image);
    this.nv.setDrawColormap(drawColormap(data.labels) as unknown as string);
    if (data.prediction) {
      const drawing = await NVImage.loadFromUrl({ url: "prediction.nii.gz", name: "prediction.nii.gz", buffer: data.prediction });
      if (!this.nv.loadDrawing(drawing)) throw new Error("the pre-segmentation does not match the image's grid");
    } else {
      this.nv.createEmptyDrawing();
    }
    this.edits = 0;
    this.setLabelsVisible(true);
    this.setLayout(this.layout);
    this.applyTool();
  }

  async setUncertainty(map: ArrayBuffer | null): Promise<void> {
    if (this.uncertainty) {
      this.nv.removeVolume(this.uncertainty);
      this.uncertainty = null;
    }
    if (!map) return;
    this.uncertainty = await NVImage.loadFromUrl({ url: "uncertainty.nii.gz", name: "uncertainty.nii.gz", buffer: map, colormap: "warm", opacity: 0 });
    if (this.uncertainty.img) {
      // Stored values are scaled on read (scl_slope): the range is in the map's own units.
      const slope = this.uncertainty.hdr?.scl_slope || 1;
      const inter = this.uncertainty.hdr?.scl_inter || 0;
      const range = heatRange(this.uncertainty.img as ArrayLike<number>);
      this.uncertainty.cal_min = range.min * slope + inter;
      this.uncertainty.cal_max = range.max * slope + inter;
    }
    this.nv.addVolume(this.uncertainty);
    this.setUncertaintyVisible(this.uncertaintyVisible);
  }

  hasUncertainty(): boolean {
    return this.uncertainty !== null;
  }

  setUncertaintyVisible(visible: boolean): void {
    this.uncertaintyVisible = visible;
    if (this.uncertainty) {
      this.nv.setOpacity(this.nv.volumes.indexOf(this.uncertainty), visible ? 0.55 : 0);
    }
  }

  isUncertaintyVisible(): boolean {
    return this.uncertaintyVisible;
  }

  setLabelsVisible(visible: boolean): void {
    this.labelsVisible = visible;
    this.nv.setDrawOpacity(visible ? 0.6 : 0);
  }

  areLabelsVisible(): boolean {
    return this.labelsVisible;
  }

  setLayout(layout: Layout): void {
    this.layout = layout;
    this.nv.setSliceType(SLICE[layout]);
  }

  setTool(tool: Tool): void {
    this.tool = tool;
    this.applyTool();
  }

  getTool(): Tool {
    return this.tool;
  }

  setLabel(value: number): void {
    this.label = value;
    this.applyTool();
  }

  getLabel(): number {
    return this.label;
  }

  setPenSize(size: number): void {
    this.nv.opts.penSize = size;
  }

  getPenSize(): number {
    return this.nv.opts.penSize;
  }

  undo(): void {
    this.nv.drawUndo();
  }

  /** CT presets by id, or "auto" (the volume's robust range, for MR and as a CT fallback). */
  setWindow(id: string): DisplayWindow {
    const volume = this.nv.volumes[0];
    const preset = CT_PRESETS.find((p) => p.id === id);
    const window = preset ? presetWindow(preset)
      : autoWindow(volume.robust_min ?? NaN, volume.robust_max ?? NaN, volume.global_min ?? 0, volume.global_max ?? 1);
    return this.setRange(window.min, window.max, window.name);
  }

  setRange(min: number, max: number, name = "Manual"): DisplayWindow {
    const volume = this.nv.volumes[0];
    volume.cal_min = min;
    volume.cal_max = max;
    this.nv.updateGLVolume();
    return { name, min, max };
  }

  /** The drawing as a NIfTI file on the image's grid and orientation (NiiVue maps its RAS bitmap back). */
  async drawingNifti(): Promise<Uint8Array> {
    const bytes = await this.nv.saveImage({ filename: "", isSaveDrawing: true, volumeByIndex: 0 });
    if (!(bytes instanceof Uint8Array)) throw new Error("there is no drawing to save");
    return bytes;
  }

  editCount(): number {
    return this.edits;
  }

  markSaved(): void {
    this.edits = 0;
  }

  clear(): void {
    this.nv.closeDrawing();
    while (this.nv.volumes.length > 0) this.nv.removeVolumeByIndex(0);
    this.uncertainty = null;
  }

  private applyTool(): void {
    const drawing = this.tool !== "navigate";
    this.nv.setDrawingEnabled(drawing);
    if (!drawing) return;
    const value = this.tool === "eraser" ? 0 : this.label;
    this.nv.setPenValue(value, this.tool === "fill");
  }
}
