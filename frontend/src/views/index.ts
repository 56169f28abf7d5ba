// Route name → view. Each view lives in its own module.
import type { View } from "../context";
import { parseRoute, type Route } from "../router";
import { h } from "../dom";
import { renderProjects } from "./projects";
import { renderWorkspace } from "./workspace";
import { renderProject } from "./admin/project";
import { renderUsers } from "./admin/users";

export const VIEWS: Record<Route["name"], View> = {
  signin: () => undefined, // handled by main.ts before a view is chosen
  projects: renderProjects,
  work: (container, ctx) => renderWorkspace(container, ctx, currentProjectId()),
  project: renderProject,
  users: renderUsers,
  "not-found": (container) => {
    container.append(h("section", {}, h("h1", {}, "Page not found"), h("p", {}, h("a", { href: "#/projects" }, "Back to the projects"))));
  },
};

function currentProjectId(): number {
  const route = parseRoute(location.hash);
  return route.name === "work" ? route.projectId : NaN;
}
