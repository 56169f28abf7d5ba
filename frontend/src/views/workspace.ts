// The annotator workspace: claim the next case, see why, edit the model's pre-segmentation, submit / skip / release.
import { ApiError } from "../api";
import type { AppContext } from "../context";
import { clear, formatNumber, h } from "../dom";
import { cssColor } from "../labels";
import { formatCountdown, LeaseClock, leaseLostMessage } from "../lease";
import { actionFor, SHORTCUTS, type Action } from "../shortcuts";
import type { Project } from "../types";
import { LAYOUTS, Viewer, type Layout, type Tool } from "../viewer";
import { windowChoices } from "../windows";

interface CaseInfo {
  id: number;
  patient: string;
  shape: number[];
  spacing: number[];
  status: string;
  latest_label_version: number | null;
}

interface Claim {
  case: CaseInfo;
  rank: number | null;
  score: number | null;
  ranking_id: number | null;
  model_version: number | null;
  lease: { token: string; expires_at: string };
  review: { comment: string | null; reviewer: string | null; version: number } | null;
}

interface LiveLease {
  token: string | null;
  case_id: number;
  expires_at: string;
}

const LAYOUT_NAMES: Record<Layout, string> = { multi: "Four views", axial: "Axial", coronal: "Coronal", sagittal: "Sagittal", "3d": "3D" };
const WINDOW_NAMES: Record<string, string> = { "soft-tissue": "Soft tissue", bone: "Bone", lung: "Lung", auto: "Auto contrast" };
const TICK_MS = 1000;

export async function renderWorkspace(container: HTMLElement, ctx: AppContext, projectId: number): Promise<void> {
  const project = await ctx.api.get<Project>(`/api/v1/projects/${projectId}`);
  await new Workspace(container, ctx, project).start();
}

class Workspace {
  private viewer!: Viewer;
  private readonly canvas = h("canvas", { id: "viewer", "aria-label": "Image viewer: drag to paint, scroll to move through slices" });
  private readonly status = h("p", { id: "ws-status", class: "ws-status", role: "status", "aria-live": "polite" });
  private readonly location = h("p", { id: "ws-location", class: "muted ws-location" });
  private readonly info = h("div", { id: "case-info" });
  private readonly countdown = h("span", { id: "lease-countdown" }, "–");
  private readonly actions = h("div", { class: "ws-actions" });
  private readonly help: HTMLDialogElement;
  private claim: Claim | null = null;
  private clock: LeaseClock | null = null;
  private lost = false;
  private busy = false;
  private windowId: string;

  constructor(private readonly container: HTMLElement, private readonly ctx: AppContext, private readonly project: Project) {
    this.windowId = windowChoices(project.modality)[0];
    this.help = helpDialog();
  }

  async start(): Promise<void> {
    this.container.append(h("section", { class: "workspace" },
      this.toolPanel(),
      h("div", { class: "ws-stage" }, h("div", { class: "ws-canvas" }, this.canvas), this.location),
      h("aside", { class: "ws-side", "aria-label": "Case" },
        h("h1", {}, this.project.name),
        this.info,
        h("p", { class: "lease" }, "Lease: ", this.countdown),
        this.actions,
        this.status)),
    this.help);
    this.viewer = await Viewer.create(this.canvas, (text) => { this.location.textContent = text; });
    const onKey = (event: KeyboardEvent) => this.onKey(event);
    const onActivity = () => this.clock?.touch(Date.now());
    const onUnload = (event: BeforeUnloadEvent) => {
      if (this.viewer.editCount() > 0) event.preventDefault();
    };
    document.addEventListener("keydown", onKey);
    document.addEventListener("pointerdown", onActivity);
    document.addEventListener("keydown", onActivity);
    window.addEventListener("beforeunload", onUnload);
    const timer = window.setInterval(() => void this.tick(), TICK_MS);
    this.ctx.onLeave(() => {
      document.removeEventListener("keydown", onKey);
      document.removeEventListener("pointerdown", onActivity);
      document.removeEventListener("keydown", onActivity);
      window.removeEventListener("beforeunload", onUnload);
      window.clearInterval(timer);
      this.viewer.clear();
    });
    this.showIdle("Press Next case to claim the top case of the queue.");
    void this.resumeOrIdle();
  }

  // --- panels --------------------------------------------------------------------------------------------------

  private toolPanel(): HTMLElement {
    const labels = h("fieldset", { class: "ws-labels" }, h("legend", {}, "Label"),
      ...this.project.labels.slice(1).map((name, i) => {
        const value = i + 1;
        const input = h("input", { type: "radio", name: "label", id: `label-${value}`, value: String(value), checked: value === 1,
          onchange: () => this.selectLabel(value) });
        return h("label", { for: `label-${value}`, class: "ws-label" }, input,
          h("span", { class: "swatch", style: `background:${cssColor(value)}` }), `${value < 10 ? value : ""} ${name}`);
      }));
    const tools = h("div", { class: "ws-tools", role: "group", "aria-label": "Tool" },
      ...(["brush", "eraser", "fill", "navigate"] as Tool[]).map((tool) => h("button", {
        type: "button", id: `tool-${tool}`, class: "secondary", "aria-pressed": String(tool === "brush"),
        onclick: () => this.selectTool(tool),
      }, { brush: "Brush (B)", eraser: "Eraser (E)", fill: "2D fill (F)", navigate: "Navigate" }[tool])));
    const size = h("input", { type: "range", id: "brush-size", min: "1", max: "15", value: "3",
      oninput: (event: Event) => this.viewer.setPenSize(Number((event.target as HTMLInputElement).value)) });
    const layouts = h("div", { class: "ws-layouts", role: "group", "aria-label": "Layout" },
      ...LAYOUTS.map((layout) => h("button", { type: "button", id: `view-${layout}`, class: "secondary",
        "aria-pressed": String(layout === "multi"), onclick: () => this.selectLayout(layout) }, LAYOUT_NAMES[layout])));
    const windows = h("select", { id: "window-preset", onchange: (event: Event) => this.selectWindow((event.target as HTMLSelectElement).value) },
      ...windowChoices(this.project.modality).map((id) => h("option", { value: id }, WINDOW_NAMES[id] ?? id)));
    const min = h("input", { type: "number", id: "window-min", step: "any", "aria-label": "Window minimum" });
    const max = h("input", { type: "number", id: "window-max", step: "any", "aria-label": "Window maximum" });
    const applyRange = () => {
      if (min.value !== "" && max.value !== "" && Number(max.value) > Number(min.value)) this.viewer.setRange(Number(min.value), Number(max.value));
    };
    min.addEventListener("change", applyRange);
    max.addEventListener("change", applyRange);
    return h("aside", { class: "ws-panel", "aria-label": "Tools" },
      labels,
      h("h2", {}, "Tool"), tools,
      h("label", { for: "brush-size" }, "Brush size ([ / ])"), size,
      h("button", { type: "button", id: "undo", class: "secondary", onclick: () => this.viewer.undo() }, "Undo (Ctrl+Z)"),
      h("h2", {}, "View"), layouts,
      h("label", { for: "window-preset" }, this.project.modality === "CT" ? "Window (W)" : "Contrast (W)"), windows,
      h("div", { class: "ws-range" }, min, max),
      h("label", { class: "check" }, h("input", { type: "checkbox", id: "show-labels", checked: true,
        onchange: (event: Event) => this.viewer.setLabelsVisible((event.target as HTMLInputElement).checked) }), "Labels (H)"),
      h("label", { class: "check" }, h("input", { type: "checkbox", id: "show-uncertainty",
        onchange: (event: Event) => this.viewer.setUncertaintyVisible((event.target as HTMLInputElement).checked) }), "Uncertainty (U)"),
      h("button", { type: "button", id: "help-open", class: "secondary", onclick: () => this.help.showModal() }, "Shortcuts (?)"));
  }

  private showIdle(message: string): void {
    this.claim = null;
    this.clock = null;
    this.lost = false;
    clear(this.info);
    this.info.append(h("p", { class: "muted" }, message));
    this.countdown.textContent = "–";
    this.setActions(h("button", { type: "button", id: "next-case", onclick: () => void this.next() }, "Next case"));
  }

  private showCase(claim: Claim, resumed: boolean): void {
    clear(this.info);
    const why = claim.rank !== null
      ? `Rank ${claim.rank} in ranking ${claim.ranking_id ?? "–"}${claim.model_version ? ` (model v${claim.model_version})` : " (no model yet: cold-start order)"}; score ${formatNumber(claim.score, 4)}`
      : resumed ? "Resumed: you already held this case." : "Arrived after the current ranking was published.";
    this.info.append(
      h("dl", { class: "ws-facts" },
        h("dt", {}, "Case"), h("dd", { id: "case-id" }, String(claim.case.id)),
        h("dt", {}, "Patient"), h("dd", {}, claim.case.patient),
        h("dt", {}, "Size"), h("dd", {}, `${claim.case.shape.join(" × ")} voxels, ${claim.case.spacing.map((s) => s.toFixed(2)).join(" × ")} mm`),
        h("dt", {}, "Why this case"), h("dd", { id: "case-why" }, why),
        h("dt", {}, "Labelled before"), h("dd", {}, claim.case.latest_label_version ? `version ${claim.case.latest_label_version}` : "no")),
      claim.review ? h("div", { class: "review-note", role: "note" },
        h("strong", {}, `A reviewer${claim.review.reviewer ? ` (${claim.review.reviewer})` : ""} sent version ${claim.review.version} back: `),
        claim.review.comment ?? "") : "");
    this.setActions(
      h("button", { type: "button", id: "submit", onclick: () => void this.submit() }, "Submit (Ctrl+Enter)"),
      h("button", { type: "button", id: "skip", class: "secondary", onclick: () => this.askSkip() }, "Skip"),
      h("button", { type: "button", id: "release", class: "secondary", onclick: () => void this.release() }, "Release"),
      h("button", { type: "button", id: "renew", class: "secondary", onclick: () => void this.renew(true) }, "Renew lease"),
      h("button", { type: "button", id: "download-edits", class: "secondary", onclick: () => void this.download() }, "Download edits (NIfTI)"));
  }

  private setActions(...buttons: HTMLElement[]): void {
    clear(this.actions);
    this.actions.append(...buttons);
  }

  private say(message: string): void {
    this.status.textContent = message;
  }

  // --- claim, load ---------------------------------------------------------------------------------------------

  private async resumeOrIdle(): Promise<void> {
    try {
      const leases = await this.ctx.api.get<LiveLease[]>("/api/v1/leases", { project_id: this.project.id });
      const mine = leases.find((lease) => lease.token);
      if (!mine || !mine.token) return;
      const info = await this.ctx.api.get<CaseInfo>(`/api/v1/cases/${mine.case_id}`);
      await this.open({ case: info, rank: null, score: null, ranking_id: null, model_version: null,
        lease: { token: mine.token, expires_at: mine.expires_at }, review: null }, true);
    } catch (error) {
      this.ctx.showError(error);
    }
  }

  /** Claims and opens the next case; `after` is what just happened (kept in the banner). */
  private async next(after: string | null = null): Promise<void> {
    if (this.busy) return;
    this.busy = true;
    if (after) this.ctx.showMessage(after);
    else this.ctx.clearBanner();
    this.say("Claiming the next case…");
    try {
      const claim = await this.ctx.api.post<Claim | null>(`/api/v1/projects/${this.project.id}/queue/next`);
      if (!claim) {
        this.showIdle("No case is left to annotate in this project. Check again after the next cycle or new uploads.");
        this.say("The queue is empty.");
        return;
      }
      await this.open(claim, false);
    } catch (error) {
      this.ctx.showError(error);
      this.say("");
    } finally {
      this.busy = false;
    }
  }

  private async open(claim: Claim, resumed: boolean): Promise<void> {
    this.say(`Loading case ${claim.case.id}…`);
    const [image, prediction, uncertainty] = await Promise.all([
      this.ctx.api.bytes(`/api/v1/cases/${claim.case.id}/image`),
      this.optional(`/api/v1/cases/${claim.case.id}/prediction`),
      this.optional(`/api/v1/cases/${claim.case.id}/uncertainty`),
    ]);
    await this.viewer.load({ image, prediction, labels: this.project.labels });
    await this.viewer.setUncertainty(uncertainty);
    const toggle = document.getElementById("show-uncertainty") as HTMLInputElement | null;
    if (toggle) {
      toggle.disabled = uncertainty === null;
      toggle.checked = false;
    }
    const labelsToggle = document.getElementById("show-labels") as HTMLInputElement | null;
    if (labelsToggle) labelsToggle.checked = true;
    this.applyWindow();
    this.claim = claim;
    this.clock = new LeaseClock(claim.lease.token, claim.lease.expires_at, Date.now());
    this.lost = false;
    this.showCase(claim, resumed);
    this.say(prediction ? "The model's pre-segmentation is loaded as your starting drawing." : "No model prediction yet: the drawing starts empty.");
    this.canvas.dataset.caseId = String(claim.case.id);
    this.canvas.dataset.prediction = prediction ? "yes" : "no";
  }

  /** A case output that may not exist yet (no model has scored the case): null on 404. */
  private async optional(path: string): Promise<ArrayBuffer | null> {
    try {
      return await this.ctx.api.bytes(path);
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) return null;
      throw error;
    }
  }

  // --- submit, skip, release, lease ------------------------------------------------------------------------------

  private async submit(): Promise<void> {
    if (!this.claim || this.busy) return;
    this.busy = true;
    this.ctx.clearBanner();
    const caseId = this.claim.case.id;
    try {
      const nifti = await this.viewer.drawingNifti();
      const form = new FormData();
      form.append("file", new Blob([nifti as BlobPart], { type: "application/octet-stream" }), `case-${caseId}-label.nii`);
      const version = await this.ctx.api.json<{ version: number }>("PUT", `/api/v1/cases/${caseId}/label`, { body: form });
      this.viewer.markSaved();
      this.busy = false;
      this.showIdle(`Case ${caseId} submitted.`);
      await this.next(`Submitted version ${version.version} of case ${caseId}.`);
    } catch (error) {
      this.ctx.showError(error);
      if (error instanceof ApiError && error.status === 409) this.loseLease(error);
    } finally {
      this.busy = false;
    }
  }

  private askSkip(): void {
    if (!this.claim) return;
    const reason = h("textarea", { id: "skip-reason", required: true, rows: 3, maxlength: 2000 });
    const dialog = h("dialog", { id: "skip-dialog", "aria-labelledby": "skip-title" });
    const form = h("form", { method: "dialog" },
      h("h2", { id: "skip-title" }, "Skip this case"),
      h("label", { for: "skip-reason" }, "Why? (the lead reads it: e.g. artefact, wrong series, outside your expertise)"),
      reason,
      h("div", { class: "actions" },
        h("button", { type: "submit", id: "skip-confirm" }, "Skip case"),
        h("button", { type: "button", class: "secondary", onclick: () => dialog.close() }, "Cancel")));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      if (!reason.value.trim()) return;
      dialog.close();
      void this.skip(reason.value.trim());
    });
    dialog.addEventListener("close", () => dialog.remove());
    dialog.append(form);
    this.container.append(dialog);
    dialog.showModal();
    reason.focus();
  }

  private async skip(reason: string): Promise<void> {
    if (!this.claim) return;
    try {
      await this.ctx.api.post(`/api/v1/leases/${encodeURIComponent(this.claim.lease.token)}/skip`, { reason });
      this.viewer.markSaved();
      const caseId = this.claim.case.id;
      this.showIdle("Skipped.");
      await this.next(`Skipped case ${caseId}.`);
    } catch (error) {
      this.ctx.showError(error);
      if (error instanceof ApiError && [404, 409, 410].includes(error.status)) this.loseLease(error);
    }
  }

  private async release(): Promise<void> {
    if (!this.claim) return;
    if (this.viewer.editCount() > 0 && !window.confirm("Release the case and discard your edits?")) return;
    try {
      await this.ctx.api.delete(`/api/v1/leases/${encodeURIComponent(this.claim.lease.token)}`);
      const caseId = this.claim.case.id;
      this.viewer.markSaved();
      this.viewer.clear();
      this.showIdle(`Case ${caseId} released: it is back in the queue for anyone.`);
      this.say("");
    } catch (error) {
      this.ctx.showError(error);
      if (error instanceof ApiError && [404, 409, 410].includes(error.status)) this.loseLease(error);
    }
  }

  private async renew(explicit: boolean): Promise<void> {
    if (!this.claim || !this.clock || this.lost) return;
    try {
      const lease = await this.ctx.api.post<{ expires_at: string }>(`/api/v1/leases/${encodeURIComponent(this.claim.lease.token)}/renew`);
      this.clock.renewed(lease.expires_at, Date.now());
      if (explicit) this.say(`Lease renewed until ${this.clock.expiresAtDate().toLocaleTimeString()}.`);
    } catch (error) {
      if (error instanceof ApiError && [404, 409, 410].includes(error.status)) this.loseLease(error);
      else this.ctx.showError(error);
    }
  }

  private loseLease(error: ApiError | null): void {
    this.lost = true;
    const message = leaseLostMessage(error?.status ?? 410, error?.message ?? null);
    this.ctx.showError(new Error(message));
    this.countdown.textContent = "lost";
    this.say(message);
    document.getElementById("renew")?.setAttribute("disabled", "");
    const next = h("button", { type: "button", id: "next-case", class: "secondary", onclick: () => {
      if (this.viewer.editCount() === 0 || window.confirm("Open the next case and discard your edits? (Download them first to keep them.)")) void this.next();
    } }, "Next case");
    this.actions.append(next);
  }

  private async tick(): Promise<void> {
    if (!this.clock || this.lost) return;
    const now = Date.now();
    this.countdown.textContent = `${formatCountdown(this.clock.remainingMs(now))} left`;
    if (this.clock.expired(now)) this.loseLease(null);
    else if (this.clock.shouldRenew(now)) await this.renew(false);
  }

  private async download(): Promise<void> {
    if (!this.claim) return;
    try {
      const nifti = await this.viewer.drawingNifti();
      const url = URL.createObjectURL(new Blob([nifti as BlobPart], { type: "application/octet-stream" }));
      const link = h("a", { href: url, download: `case-${this.claim.case.id}-edits.nii` });
      document.body.append(link);
      link.click();
      link.remove();
      window.setTimeout(() => URL.revokeObjectURL(url), 10_000);
    } catch (error) {
      this.ctx.showError(error);
    }
  }

  // --- tools and keys --------------------------------------------------------------------------------------------

  private selectTool(tool: Tool): void {
    this.viewer.setTool(tool);
    for (const name of ["brush", "eraser", "fill", "navigate"]) {
      document.getElementById(`tool-${name}`)?.setAttribute("aria-pressed", String(name === tool));
    }
  }

  private selectLabel(value: number): void {
    if (value < 1 || value >= this.project.labels.length) return;
    this.viewer.setLabel(value);
    const radio = document.getElementById(`label-${value}`) as HTMLInputElement | null;
    if (radio) radio.checked = true;
    if (this.viewer.getTool() === "eraser" || this.viewer.getTool() === "navigate") this.selectTool("brush");
  }

  private selectLayout(layout: Layout): void {
    this.viewer.setLayout(layout);
    for (const name of LAYOUTS) document.getElementById(`view-${name}`)?.setAttribute("aria-pressed", String(name === layout));
  }

  private selectWindow(id: string): void {
    this.windowId = id;
    this.applyWindow();
  }

  private applyWindow(): void {
    try {
      const range = this.viewer.setWindow(this.windowId);
      const min = document.getElementById("window-min") as HTMLInputElement | null;
      const max = document.getElementById("window-max") as HTMLInputElement | null;
      if (min && max) {
        min.value = String(Math.round(range.min * 100) / 100);
        max.value = String(Math.round(range.max * 100) / 100);
      }
      const select = document.getElementById("window-preset") as HTMLSelectElement | null;
      if (select) select.value = this.windowId;
    } catch {
      // no volume loaded yet
    }
  }

  private onKey(event: KeyboardEvent): void {
    if (this.help.open && event.key !== "?") return;
    const target = event.target as HTMLElement | null;
    const action = actionFor({ key: event.key, ctrlKey: event.ctrlKey, metaKey: event.metaKey, altKey: event.altKey,
      targetTag: target?.tagName, targetType: target instanceof HTMLInputElement ? target.type : undefined });
    if (!action) return;
    if (document.querySelector("dialog[open]") && action !== "help") return;
    event.preventDefault();
    this.run(action);
  }

  private run(action: Action): void {
    if (action.startsWith("label-")) return this.selectLabel(Number(action.slice(6)));
    const choices = windowChoices(this.project.modality);
    switch (action) {
      case "brush": case "eraser": case "fill": return this.selectTool(action);
      case "undo": return this.viewer.undo();
      case "smaller": case "larger": {
        const size = Math.min(15, Math.max(1, this.viewer.getPenSize() + (action === "larger" ? 1 : -1)));
        this.viewer.setPenSize(size);
        (document.getElementById("brush-size") as HTMLInputElement).value = String(size);
        return;
      }
      case "toggle-labels": return this.toggle("show-labels", (on) => this.viewer.setLabelsVisible(on));
      case "toggle-uncertainty":
        if (this.viewer.hasUncertainty()) this.toggle("show-uncertainty", (on) => this.viewer.setUncertaintyVisible(on));
        return;
      case "next-view": return this.selectLayout(LAYOUTS[(LAYOUTS.indexOf(this.viewer.layout) + 1) % LAYOUTS.length]);
      case "next-window": return this.selectWindow(choices[(choices.indexOf(this.windowId) + 1) % choices.length]);
      case "submit": return void this.submit();
      case "help": return this.help.open ? this.help.close() : this.help.showModal();
    }
  }

  private toggle(id: string, apply: (on: boolean) => void): void {
    const box = document.getElementById(id) as HTMLInputElement;
    box.checked = !box.checked;
    apply(box.checked);
  }
}

function helpDialog(): HTMLDialogElement {
  const dialog = h("dialog", { id: "help", "aria-labelledby": "help-title" },
    h("h2", { id: "help-title" }, "Keyboard shortcuts"),
    h("table", {}, h("tbody", {}, ...SHORTCUTS.map((s) => h("tr", {}, h("td", {}, h("kbd", {}, s.keys)), h("td", {}, s.description))))),
    h("p", { class: "muted" }, "Mouse: left-drag paints with the current tool; scroll moves through slices; right-drag changes contrast."),
    h("form", { method: "dialog" }, h("button", { type: "submit", id: "help-close" }, "Close")));
  return dialog;
}
