// Campaign: GET /projects/{id}/campaign as tables (is the model getting better, what its pre-segmentations save,
// does the ranking find its mistakes).
import type { AppContext } from "../../context";
import { formatDate, formatNumber, h, table } from "../../dom";
import { formatEstimate } from "../../admin/format";
import type { CampaignReport } from "../../admin/types";
import { download, guarded } from "../../admin/ui";
import type { Project } from "../../types";

export async function renderCampaign(panel: HTMLElement, ctx: AppContext, project: Project): Promise<void> {
  const report = await ctx.api.get<CampaignReport>(`/api/v1/projects/${project.id}/campaign`);
  const csv: HTMLButtonElement = h("button", { type: "button", class: "secondary", id: "campaign-csv", onclick: () => void guarded(ctx,
    () => download(ctx, `/api/v1/projects/${project.id}/campaign?format=csv`, `campaign-${project.id}.csv`), csv) }, "Download CSV");
  const version = (v: number | null) => (v === null ? "none" : `v${v}`);
  panel.append(
    h("div", { class: "panel" }, h("h2", {}, "Campaign"),
      h("p", {}, `Generated ${formatDate(report.generated_at)}. Control fraction ${report.control_fraction}; `,
        `${report.pending} comparison${report.pending === 1 ? "" : "s"} pending, ${report.failed} failed. `, csv)),
    h("div", { class: "panel" }, h("h2", {}, "Pre-segmentation quality by model version and arm"),
      report.arms.length === 0 ? h("p", {}, "No label submitted yet.") : h("div", { class: "scroll-x" }, table(
        ["Model", "Arm", "Labels", "Compared", "Pending", "Mean foreground Dice", ...report.classes.map((c) => `Dice ${c}`), "Median minutes", "Median voxels changed"],
        report.arms.map((a) => [version(a.model_version), a.arm, a.labels, a.compared, a.pending, formatEstimate(a.mean_foreground_dice),
          ...report.classes.map((c) => formatEstimate(a.dice[c])), formatNumber(a.median_minutes, 1), formatNumber(a.median_voxels_changed, 0)]),
        { id: "campaign-arms" }))),
    h("div", { class: "two-col" },
      h("div", { class: "panel" }, h("h2", {}, "Ranked minus control"),
        report.ranked_vs_control.length === 0 ? h("p", {}, "No model version with both arms yet.") : table(["Model", "Ranked − control (mean foreground Dice)"],
          report.ranked_vs_control.map((r) => [version(r.model_version), formatEstimate(r.ranked_minus_control)]), { id: "campaign-ranked" })),
      h("div", { class: "panel" }, h("h2", {}, "Annotators"),
        report.annotators.length === 0 ? h("p", {}, "No label submitted yet.") : table(["User", "Labels", "Active days", "Labels per day", "Median minutes"],
          report.annotators.map((a) => [a.user, a.labels, a.active_days, formatNumber(a.labels_per_day, 1), formatNumber(a.median_minutes, 1)]),
          { id: "campaign-annotators" }))),
    h("div", { class: "panel" }, h("h2", {}, "How to read it"), h("ul", {}, ...report.explanation.map((line) => h("li", {}, line)))));
}
