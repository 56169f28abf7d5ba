// A project's admin page: a header, one link per tab (each tab is its own route, so reload and back work),
// and the tab's panel.
import "../../admin/admin.css";
import type { AppContext } from "../../context";
import { h } from "../../dom";
import { PROJECT_TABS, parseRoute, routeHash, type ProjectTab } from "../../router";
import type { Project } from "../../types";
import { renderCampaign } from "./campaign";
import { renderCases } from "./cases";
import { renderCurve } from "./curve";
import { renderCycles } from "./cycles";
import { renderModels } from "./models";
import { renderOverview } from "./overview";
import { renderRanking } from "./ranking";

export type TabView = (panel: HTMLElement, ctx: AppContext, project: Project) => Promise<void>;

const TAB_TITLES: Record<ProjectTab, string> = {
  overview: "Overview", ranking: "Ranking", cases: "Cases", cycles: "Cycles", models: "Models",
  curve: "Learning curve", campaign: "Campaign",
};

const TAB_VIEWS: Record<ProjectTab, TabView> = {
  overview: renderOverview, ranking: renderRanking, cases: renderCases, cycles: renderCycles, models: renderModels,
  curve: renderCurve, campaign: renderCampaign,
};

export async function renderProject(container: HTMLElement, ctx: AppContext): Promise<void> {
  const route = parseRoute(location.hash);
  if (route.name !== "project") return;
  const project = await ctx.api.get<Project>(`/api/v1/projects/${route.projectId}`);
  document.title = `${project.name} · ${TAB_TITLES[route.tab]} · NextCase`;
  const tabs = h("nav", { class: "tabs", "aria-label": "Project sections" },
    ...PROJECT_TABS.map((tab) => h("a", {
      href: routeHash({ name: "project", projectId: project.id, tab }),
      "aria-current": tab === route.tab ? "page" : undefined,
      dataset: { tab },
    }, TAB_TITLES[tab])));
  const panel = h("section", { class: "tab-panel", id: `tab-${route.tab}`, "aria-labelledby": "tab-title" },
    h("h2", { id: "tab-title", class: "visually-hidden" }, TAB_TITLES[route.tab]));
  container.append(
    h("div", { class: "project-head" },
      h("h1", { id: "project-name" }, project.name),
      h("p", { class: "muted" }, `${project.modality} · labels: ${project.labels.slice(1).join(", ")}`),
      h("a", { class: "button", href: routeHash({ name: "work", projectId: project.id }) }, "Annotate")),
    tabs, panel);
  await TAB_VIEWS[route.tab](panel, ctx, project);
}
