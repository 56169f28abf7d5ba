// Overview: the pool's queue figures and the settings an admin may change while the campaign runs.
import type { AppContext } from "../../context";
import { formatDate, h } from "../../dom";
import { settingsPatch } from "../../admin/projectForm";
import type { ProjectSettings, QueueStats } from "../../admin/types";
import { field, guarded, select } from "../../admin/ui";
import { isAdmin } from "../../session";
import type { Project } from "../../types";

export async function renderOverview(panel: HTMLElement, ctx: AppContext, project: Project): Promise<void> {
  const stats = await ctx.api.get<QueueStats>(`/api/v1/projects/${project.id}/queue/stats`);
  const figure = (label: string, value: string | number, key: string) =>
    h("div", {}, h("dt", {}, label), h("dd", { dataset: { stat: key } }, String(value)));
  const ranking = stats.ranking;
  panel.append(
    h("div", { class: "panel" },
      h("h2", {}, "Queue (pool split)"),
      h("dl", { class: "stats", id: "queue-stats" },
        figure("Open", stats.open, "open"), figure("Leased", stats.leased, "leased"),
        figure("In review", stats.in_review, "in_review"), figure("Labelled", stats.labelled, "labelled"),
        figure("Excluded", stats.excluded, "excluded"), figure("Pool cases", stats.pool, "pool"),
        figure("Validation cases", stats.validation, "validation"),
        figure("Labelled fraction", `${(stats.labelled_fraction * 100).toFixed(1)} %`, "labelled_fraction")),
      h("p", { id: "ranking-info" }, ranking
        ? `Ranking ${ranking.id}: ${ranking.kind}, strategy ${ranking.strategy}${ranking.model_version !== null ? `, model version id ${ranking.model_version}` : ""}, published ${formatDate(ranking.created_at)}.`
        : "No ranking yet: cases are handed out in a seeded random order until the first cycle publishes one."),
      h("p", {}, h("a", { href: `#/projects/${project.id}/work` }, "Annotate this project"), " · ",
        h("a", { href: `#/projects/${project.id}/ranking` }, "See the ranking"), " · ",
        h("a", { href: `#/projects/${project.id}/cycles` }, "Start a cycle"))),
    settingsForm(ctx, project));
}

function settingsForm(ctx: AppContext, project: Project): HTMLElement {
  const admin = isAdmin(ctx.user);
  const fraction = h("input", { name: "control_fraction", inputmode: "decimal", value: String(project.control_fraction), disabled: !admin });
  const trainOn = select("train_on", ["submitted", "approved"], project.train_on);
  const readers = h("input", { name: "readers_per_case", inputmode: "numeric", value: String(project.readers_per_case), disabled: !admin });
  const consensus = select("consensus_method", [["staple", "STAPLE"], ["majority_vote", "majority vote"]], project.consensus_method);
  const upload = h("input", { type: "checkbox", name: "annotators_can_upload_cases", checked: project.annotators_can_upload_cases, disabled: !admin });
  trainOn.disabled = consensus.disabled = !admin;
  const save = h("button", { type: "submit", id: "settings-save", disabled: !admin }, "Save settings");
  const form = h("form", { class: "panel", id: "settings-form", "aria-labelledby": "settings-title" },
    h("h2", { id: "settings-title" }, "Settings"),
    h("div", { class: "grid-form" },
      field("settings-control-fraction", "Control fraction", fraction, "share of claims drawn at random (0 = off)"),
      field("settings-train-on", "Train on", trainOn, "which label versions count as labelled"),
      field("settings-readers", "Readers per case", readers, "distinct annotators per case"),
      field("settings-consensus", "Consensus method", consensus, "how several readings combine"),
      h("div", { class: "field check" }, upload, h("label", { for: "settings-upload" }, "Annotators may upload cases"))),
    h("div", { class: "form-actions" }, save, h("span", { class: "muted" }, admin ? "Only changed settings are sent." : "Only admins change settings.")));
  upload.id = "settings-upload";
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    void guarded(ctx, async () => {
      ctx.clearBanner();
      const patch = settingsPatch(project, {
        control_fraction: fraction.value, train_on: trainOn.value, readers_per_case: readers.value,
        consensus_method: consensus.value, annotators_can_upload_cases: upload.checked,
      });
      if (Object.keys(patch).length === 0) {
        ctx.showMessage("Nothing changed.");
        return;
      }
      const saved = await ctx.api.patch<ProjectSettings>(`/api/v1/projects/${project.id}`, patch);
      Object.assign(project, saved);
      ctx.showMessage(`Settings saved: ${Object.keys(patch).join(", ")}.`);
    }, save);
  });
  return form;
}
