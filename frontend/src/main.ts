import "./style.css";
import { Api, ApiError } from "./api";
import type { AppContext, View } from "./context";
import { clear, h } from "./dom";
import { parseRoute, routeHash, type Route } from "./router";
import { clearSession, isAdmin, loadSession, saveSession, setNotice, takeNotice, type SessionUser } from "./session";
import type { User } from "./types";
import { renderSignIn } from "./views/signin";
import { VIEWS } from "./views";

const REVOKED = "You were signed out: your token is no longer valid (revoked, or the user was disabled). Sign in with a new token.";

let session: SessionUser | null = loadSession();
const api = new Api(session?.token ?? null, () => signOut(REVOKED));
let cleanups: Array<() => void> = [];

function navigate(route: Route): void {
  const hash = routeHash(route);
  if (location.hash === hash) render();
  else location.hash = hash;
}

function signOut(notice: string | null): void {
  session = null;
  api.setToken(null);
  clearSession();
  if (notice) setNotice(notice);
  navigate({ name: "signin" });
}

function leaveView(): void {
  for (const cleanup of cleanups.splice(0)) {
    try {
      cleanup();
    } catch (exc) {
      console.error(exc);
    }
  }
}

function render(): void {
  leaveView();
  const root = document.getElementById("app")!;
  clear(root);
  const route = parseRoute(location.hash);
  if (!session || route.name === "signin") {
    if (session && route.name === "signin") return navigate({ name: "projects" });
    renderSignIn(root, {
      notice: takeNotice(),
      whoAmI: (token) => new Api(token, () => undefined).get<User>("/api/v1/users/me"),
      signedIn: (user, token) => {
        session = { id: user.id, name: user.name, role: user.role, token };
        saveSession(session);
        api.setToken(token);
        navigate(route.name === "signin" ? { name: "projects" } : route);
      },
    });
    return;
  }
  const banner = h("div", { id: "banner", class: "banner", role: "alert", hidden: true });
  const main = h("main", { id: "view" });
  root.append(shellHeader(session), banner, main);
  const ctx: AppContext = {
    api,
    user: session,
    navigate,
    showError: (error) => showBanner(banner, errorText(error), "error"),
    showMessage: (message) => showBanner(banner, message, "info"),
    clearBanner: () => {
      banner.hidden = true;
      banner.textContent = "";
    },
    onLeave: (cleanup) => cleanups.push(cleanup),
  };
  const view: View = VIEWS[route.name] ?? VIEWS["not-found"];
  Promise.resolve(view(main, ctx)).catch((exc) => ctx.showError(exc));
}

function errorText(error: unknown): string {
  if (error instanceof ApiError) return error.message;
  if (error instanceof Error) return error.message;
  return String(error);
}

function showBanner(banner: HTMLElement, text: string, kind: "error" | "info"): void {
  banner.hidden = false;
  banner.className = `banner banner-${kind}`;
  banner.setAttribute("role", kind === "error" ? "alert" : "status");
  banner.replaceChildren(h("span", { class: "banner-text" }, text),
    h("button", { type: "button", class: "banner-close", "aria-label": "Dismiss message", onclick: () => { banner.hidden = true; } }, "×"));
}

function shellHeader(user: SessionUser): HTMLElement {
  return h("header", { class: "shell" },
    h("a", { class: "brand", href: "#/projects" }, "NextCase"),
    h("nav", { "aria-label": "Main" },
      h("a", { href: "#/projects" }, "Projects"),
      isAdmin(user) ? h("a", { href: "#/users" }, "Users & tokens") : null,
      h("a", { href: "/docs", target: "_blank", rel: "noopener" }, "API docs")),
    h("span", { class: "who", id: "who" }, `${user.name} (${user.role})`),
    h("button", { type: "button", id: "signout", onclick: () => signOut("You signed out.") }, "Sign out"));
}

window.addEventListener("hashchange", render);
render();
