// Cases: upload (one volume, a DICOM .zip, or .dcm slices) with a progress bar, and the project's case list.
import type { AppContext } from "../../context";
import { clear, formatDate, h } from "../../dom";
import { uploadProgressText } from "../../admin/format";
import { pageInfo } from "../../admin/pagination";
import type { Case, CasePage } from "../../admin/types";
import { field, guarded, pager, select } from "../../admin/ui";
import { uploadForm } from "../../admin/upload";
import type { Project } from "../../types";

const PAGE = 25;
const SPLITS = ["pool", "validation", "test"] as const;

export async function renderCases(panel: HTMLElement, ctx: AppContext, project: Project): Promise<void> {
  const list = h("div", { id: "cases" });
  let offset = 0;
  const splitFilter = select("split", [["", "all splits"], ...SPLITS.map((s): [string, string] => [s, s])], "");
  const statusFilter = select("status", [["", "all statuses"], ["unlabelled", "unlabelled"], ["in_review", "in review"], ["labelled", "labelled"]], "");

  const load = async (): Promise<void> => {
    const page = await ctx.api.get<CasePage>(`/api/v1/projects/${project.id}/cases`,
      { limit: PAGE, offset, split: splitFilter.value, status: statusFilter.value });
    const info = pageInfo(offset, PAGE, page.items.length, page.total);
    const rows = page.items.map((c) => {
      const split = select("split", SPLITS, c.split);
      split.setAttribute("aria-label", `Split of case ${c.id}`);
      split.addEventListener("change", () => void guarded(ctx, async () => {
        ctx.clearBanner();
        await ctx.api.patch<Case>(`/api/v1/cases/${c.id}`, { split: split.value });
        await load();
      }));
      return h("tr", { dataset: { caseId: String(c.id) } },
        h("td", {}, `#${c.id}`), h("td", {}, c.patient),
        h("td", {}, c.shape.join(" × ")), h("td", {}, c.spacing.map((s) => s.toFixed(2)).join(" × ")),
        h("td", {}, c.source_format), h("td", {}, c.status + (c.excluded ? " · excluded" : "") + (c.pinned ? " · pinned" : "")),
        h("td", {}, split), h("td", { class: "num" }, c.latest_label_version ?? "–"), h("td", {}, formatDate(c.created_at)));
    });
    clear(list);
    list.append(
      rows.length === 0 ? h("p", {}, "No case matches.") : h("table", { id: "cases-table" },
        h("thead", {}, h("tr", {}, ...["Case", "Patient", "Shape (x × y × z)", "Spacing (mm)", "Source", "Status", "Split", "Label version", "Added"]
          .map((text) => h("th", { scope: "col" }, text)))),
        h("tbody", {}, ...rows)),
      pager(info, (next) => { offset = next; void guarded(ctx, load); }, "Cases"));
  };
  for (const filter of [splitFilter, statusFilter]) filter.addEventListener("change", () => { offset = 0; void guarded(ctx, load); });

  panel.append(uploadPanel(ctx, project, () => { offset = 0; return load(); }),
    h("div", { class: "panel" }, h("h2", {}, "Cases"),
      h("div", { class: "grid-form" }, field("cases-split", "Split", splitFilter), field("cases-status", "Status", statusFilter)),
      list));
  await load();
}

function uploadPanel(ctx: AppContext, project: Project, reload: () => Promise<void>): HTMLElement {
  const file = h("input", { type: "file", name: "file", multiple: true, accept: ".nii,.nii.gz,.gz,.nrrd,.mha,.mhd,.zip,.dcm" });
  const patient = h("input", { name: "patient", autocomplete: "off" });
  const mismatch = h("input", { type: "checkbox", name: "allow_modality_mismatch", id: "upload-mismatch" });
  const bar = h("progress", { id: "upload-bar", max: 1, value: 0, "aria-label": "Upload progress" });
  const text = h("span", { id: "upload-text", role: "status", "aria-live": "polite" });
  const progress = h("div", { class: "upload-progress", hidden: true }, bar, text);
  const submit = h("button", { type: "submit", id: "upload-submit" }, "Upload case");
  const form = h("form", { class: "panel", id: "upload-form", "aria-labelledby": "upload-title" },
    h("h2", { id: "upload-title" }, "Add a case"),
    h("div", { class: "grid-form" },
      field("upload-file", "Image", file, "one volume (.nii.gz, .nrrd, .mha), a DICOM .zip, or the .dcm slices of one series"),
      field("upload-patient", "Patient id", patient, "the hospital's id; stored only as a keyed hash"),
      h("div", { class: "field check" }, mismatch, h("label", { for: "upload-mismatch" }, `Accept DICOM whose modality is not ${project.modality}`))),
    h("div", { class: "form-actions" }, submit),
    progress);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    void guarded(ctx, async () => {
      ctx.clearBanner();
      const body = new FormData();
      for (const f of Array.from(file.files ?? [])) body.append("file", f, f.name);
      body.append("patient", patient.value.trim());
      if (mismatch.checked) body.append("allow_modality_mismatch", "true");
      progress.hidden = false;
      bar.value = 0;
      text.textContent = "Starting the upload…";
      try {
        const created = await uploadForm<Case>(ctx.api, `/api/v1/projects/${project.id}/cases`, body, ({ loaded, total }) => {
          bar.value = total ? loaded / total : 0;
          text.textContent = uploadProgressText(loaded, total);
        });
        bar.value = 1;
        text.textContent = `Added case #${created.id} (patient ${created.patient}, ${created.shape.join(" × ")}).`;
        form.reset();
        await reload();
      } catch (exc) {
        text.textContent = "Upload failed: see the message above.";
        throw exc;
      }
    }, submit);
  });
  return form;
}
