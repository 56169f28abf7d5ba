// Route name → view. Each view lives in its own module.
import type { View } from "../context";
import type { Route } from "../router";
import { h } from "../dom";
import { renderProjects } from "./projects";
import { renderPlaceholder } from "./placeholder";

export const VIEWS: Record<Route["name"], View> = {
  signin: () => undefined, // handled by main.ts before a view is chosen
  projects: renderProjects,
  work: (container) => renderPlaceholder(container, "Annotate"),
  project: (container) => renderPlaceholder(container, "Project"),
  users: (container) => renderPlaceholder(container, "Users and tokens"),
  "not-found": (container) => {
    container.append(h("section", {}, h("h1", {}, "Page not found"), h("p", {}, h("a", { href: "#/projects" }, "Back to the projects"))));
  },
};
