// Hash routes: the server only has to serve index.html at "/", and a reload keeps the view.

export type Route =
  | { name: "signin" }
  | { name: "projects" }
  | { name: "work"; projectId: number }
  | { name: "project"; projectId: number; tab: ProjectTab }
  | { name: "users" }
  | { name: "not-found"; path: string };

export const PROJECT_TABS = ["overview", "ranking", "cases", "cycles", "models", "curve", "campaign"] as const;
export type ProjectTab = (typeof PROJECT_TABS)[number];

export function parseRoute(hash: string): Route {
  const path = hash.replace(/^#/, "").replace(/\/+$/, "") || "/";
  const parts = path.split("/").filter(Boolean);
  if (parts.length === 0 || (parts.length === 1 && parts[0] === "projects")) return { name: "projects" };
  if (parts.length === 1 && parts[0] === "signin") return { name: "signin" };
  if (parts.length === 1 && parts[0] === "users") return { name: "users" };
  if (parts[0] === "projects" && parts.length >= 2 && /^\d+$/.test(parts[1])) {
    const projectId = Number(parts[1]);
    if (parts.length === 3 && parts[2] === "work") return { name: "work", projectId };
    if (parts.length === 2) return { name: "project", projectId, tab: "overview" };
    if (parts.length === 3 && (PROJECT_TABS as readonly string[]).includes(parts[2])) {
      return { name: "project", projectId, tab: parts[2] as ProjectTab };
    }
  }
  return { name: "not-found", path };
}

export function routeHash(route: Route): string {
  switch (route.name) {
    case "signin":
      return "#/signin";
    case "projects":
      return "#/projects";
    case "users":
      return "#/users";
    case "work":
      return `#/projects/${route.projectId}/work`;
    case "project":
      return route.tab === "overview" ? `#/projects/${route.projectId}` : `#/projects/${route.projectId}/${route.tab}`;
    case "not-found":
      return `#${route.path}`;
  }
}
