// Models: every published model version with its per-class Dice on the validation (and test) cases.
import type { AppContext } from "../../context";
import { formatDate, formatNumber, h } from "../../dom";
import type { ModelVersion, SplitMetrics } from "../../admin/types";
import { download, guarded } from "../../admin/ui";
import type { Project } from "../../types";

export async function renderModels(panel: HTMLElement, ctx: AppContext, project: Project): Promise<void> {
  const models = await ctx.api.get<ModelVersion[]>(`/api/v1/projects/${project.id}/models`);
  const classes = project.labels.slice(1);
  const withTest = models.some((m) => (m.metrics.test?.cases ?? 0) > 0);
  const box = h("div", { class: "panel" }, h("h2", {}, "Model versions"),
    h("p", { class: "hint" }, "Dice overlap with the reference labels, per structure (1 = identical, 0 = none), averaged over the split's cases; the background is left out of the mean."));
  panel.append(box);
  if (models.length === 0) {
    box.append(h("p", {}, "No model yet: a cycle that ends publishes one."));
    return;
  }
  const diceCells = (metrics: SplitMetrics | undefined) => [
    h("td", { class: "num" }, metrics?.cases ?? 0),
    h("td", { class: "num" }, formatNumber(metrics?.mean_dice)),
    ...classes.map((name) => h("td", { class: "num", dataset: { class: name } }, formatNumber(metrics?.per_class?.[name]))),
  ];
  const headers = ["Version", "Cycle", "Published", "Trained on", "Strategy", "Kept step",
    "Val. cases", "Val. mean", ...classes.map((c) => `Val. ${c}`),
    ...(withTest ? ["Test cases", "Test mean", ...classes.map((c) => `Test ${c}`)] : []), ""];
  const rows = models.map((m) => {
    const weights: HTMLButtonElement = h("button", { type: "button", class: "secondary", onclick: () => void guarded(ctx,
      () => download(ctx, `/api/v1/models/${m.id}/weights`, `project${project.id}-model-v${m.version}.pt`), weights) }, "Weights");
    const validation: SplitMetrics = { cases: m.metrics.validation_cases, mean_dice: m.metrics.mean_dice, per_class: m.metrics.per_class };
    return h("tr", { dataset: { version: String(m.version), modelId: String(m.id) } },
      h("td", {}, `v${m.version}`), h("td", {}, `#${m.cycle_id}`), h("td", {}, formatDate(m.created_at)),
      h("td", { class: "num" }, `${m.trained_case_ids.length} cases`),
      h("td", {}, String(m.params.strategy ?? "–")),
      h("td", { class: "num" }, m.metrics.kept_step ?? "–"),
      ...diceCells(validation),
      ...(withTest ? diceCells(m.metrics.test) : []),
      h("td", {}, weights));
  });
  box.append(h("div", { class: "scroll-x" }, h("table", { id: "models-table" },
    h("thead", {}, h("tr", {}, ...headers.map((text) => h("th", { scope: "col" }, text)))),
    h("tbody", {}, ...rows))));
  if (models.every((m) => !m.metrics.validation_cases)) {
    box.append(h("p", { class: "muted" }, "No validation case yet: move a few labelled cases to the validation split (Ranking or Cases) so the next cycle can be measured."));
  }
}
