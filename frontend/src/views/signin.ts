import { ApiError } from "../api";
import { h } from "../dom";
import type { User } from "../types";

export interface SignInDeps {
  /** Asks the server who owns the token (GET /api/v1/users/me with it). */
  whoAmI(token: string): Promise<User>;
  signedIn(user: User, token: string): void;
  notice: string | null;
}

/** User name + API token, as in the Slicer login: the name must match the token's owner. */
export function renderSignIn(container: HTMLElement, deps: SignInDeps): void {
  const error = h("p", { class: "form-error", role: "alert", id: "signin-error" });
  const name = h("input", { id: "signin-name", name: "username", autocomplete: "username", required: true });
  const token = h("input", { id: "signin-token", name: "token", type: "password", autocomplete: "current-password", required: true });
  const form = h("form", { class: "signin", "aria-labelledby": "signin-title" },
    h("h1", { id: "signin-title" }, "Sign in to NextCase"),
    deps.notice ? h("p", { class: "notice", role: "status", id: "signin-notice" }, deps.notice) : null,
    h("label", { for: "signin-name" }, "User name"), name,
    h("label", { for: "signin-token" }, "API token"), token,
    h("p", { class: "hint" }, "An admin creates your account and gives you a token (nextcase create-user NAME, or Users here)."),
    h("button", { type: "submit", id: "signin-submit" }, "Sign in"),
    error);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    try {
      const user = await deps.whoAmI(token.value.trim());
      if (user.name !== name.value.trim()) {
        error.textContent = `This token belongs to another user than "${name.value.trim()}".`;
        return;
      }
      deps.signedIn(user, token.value.trim());
    } catch (exc) {
      error.textContent = exc instanceof ApiError && exc.status === 401
        ? "Unknown or revoked token: ask an admin for a new one."
        : exc instanceof Error ? exc.message : String(exc);
    }
  });
  container.append(form);
  name.focus();
}
