import type { AppContext } from "../context";
import { h, table } from "../dom";
import { isAdmin } from "../session";
import type { Project } from "../types";

export async function renderProjects(container: HTMLElement, ctx: AppContext): Promise<void> {
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
        isAdmin(ctx.user) ? h("a", { class: "button secondary", href: `#/projects/${p.id}` }, "Manage") : null),
    ]), { id: "projects-table" }));
  }
}
