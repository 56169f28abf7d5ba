import "../admin/admin.css";
import type { AppContext } from "../context";
import { h, table } from "../dom";
import { projectPayload } from "../admin/projectForm";
import type { ProjectSettings } from "../admin/types";
import { field, guarded, select } from "../admin/ui";
import { isAdmin } from "../session";
import type { Project } from "../types";

export async function renderProjects(container: HTMLElement, ctx: AppContext): Promise<void> {
  document.title = "Projects · NextCase";
  const section = h("section", { class: "projects" }, h("h1", {}, "Projects"));
  container.append(section);
  const projects = await ctx.api.get<Project[]>("/api/v1/projects");
  if (projects.length === 0) {
    section.append(h("p", {}, isAdmin(ctx.user) ? "No project yet: create one below." : "No project yet: ask an admin to create one."));
  } else {
    section.append(table(["Project", "Modality", "Labels", ""], projects.map((p) => [
      p.name, p.modality, p.labels.slice(1).join(", "),
      h("span", { class: "actions" },
        h("a", { class: "button", href: `#/projects/${p.id}/work`, dataset: { action: "annotate" } }, "Annotate"),
        isAdmin(ctx.user) ? h("a", { class: "button secondary", href: `#/projects/${p.id}`, dataset: { action: "manage" } }, "Manage") : null),
    ]), { id: "projects-table" }));
  }
  if (isAdmin(ctx.user)) section.append(createForm(ctx));
}

/** Name, modality and label names; the server checks them (background first, unique, not empty) and says why not. */
function createForm(ctx: AppContext): HTMLElement {
  const name = h("input", { name: "name", autocomplete: "off" });
  const modality = select("modality", ["CT", "MR"], "CT");
  const labels = h("textarea", { name: "labels", rows: 5, spellcheck: false });
  labels.value = "background\n";
  const submit = h("button", { type: "submit", id: "project-create" }, "Create project");
  const form = h("form", { class: "panel", id: "project-form", "aria-labelledby": "project-form-title" },
    h("h2", { id: "project-form-title" }, "New project"),
    h("div", { class: "grid-form" },
      field("project-name", "Name", name),
      field("project-modality", "Modality", modality, "CT intensities are clipped to a HU window; MR is normalised per case"),
      field("project-labels", "Label names", labels, "one per line, in voxel-value order: the first is background (0)")),
    h("div", { class: "form-actions" }, submit, h("span", { class: "hint" }, "Ctrl+Enter in the label list also creates it.")));
  const send = () => void guarded(ctx, async () => {
    ctx.clearBanner();
    const project = await ctx.api.post<ProjectSettings>("/api/v1/projects", projectPayload(name.value, modality.value, labels.value));
    ctx.showMessage(`Project "${project.name}" created.`);
    ctx.navigate({ name: "project", projectId: project.id, tab: "overview" });
  }, submit);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    send();
  });
  // Enter makes a new line in the label list; Ctrl+Enter submits from there as from any other field.
  labels.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  return form;
}
