import { describe, expect, it } from "vitest";
import { parseRoute, routeHash, type Route } from "../src/router";

describe("routes", () => {
  it.each<[string, Route]>([
    ["", { name: "projects" }],
    ["#/", { name: "projects" }],
    ["#/signin", { name: "signin" }],
    ["#/users", { name: "users" }],
    ["#/projects/12/work", { name: "work", projectId: 12 }],
    ["#/projects/12", { name: "project", projectId: 12, tab: "overview" }],
    ["#/projects/12/cycles", { name: "project", projectId: 12, tab: "cycles" }],
    ["#/projects/x", { name: "not-found", path: "/projects/x" }],
    ["#/projects/3/nope", { name: "not-found", path: "/projects/3/nope" }],
  ])("%s", (hash, route) => {
    expect(parseRoute(hash)).toEqual(route);
  });

  it("round-trips every route through its hash", () => {
    const routes: Route[] = [{ name: "users" }, { name: "work", projectId: 4 }, { name: "project", projectId: 4, tab: "curve" },
      { name: "project", projectId: 4, tab: "overview" }];
    for (const route of routes) expect(parseRoute(routeHash(route))).toEqual(route);
  });
});
