// Users and tokens (admins): create a user, show their first token once, list, issue and revoke tokens.
import "../../admin/admin.css";
import type { AppContext } from "../../context";
import { clear, formatDate, h } from "../../dom";
import type { NewToken, TokenInfo, UserWithToken } from "../../admin/types";
import { field, guarded, select } from "../../admin/ui";
import type { User } from "../../types";

export async function renderUsers(container: HTMLElement, ctx: AppContext): Promise<void> {
  document.title = "Users and tokens · NextCase";
  const tokenSlot = h("div", { id: "token-slot" });
  const usersBox = h("div", { id: "users" });
  const tokensBox = h("div", { id: "tokens", class: "panel", hidden: true });
  let selected: User | null = null;

  const showToken = (owner: string, token: string) => {
    clear(tokenSlot);
    tokenSlot.append(newTokenBox(owner, token, () => clear(tokenSlot)));
    tokenSlot.querySelector<HTMLButtonElement>("button")?.focus();
  };

  const loadUsers = async (): Promise<void> => {
    const users = await ctx.api.get<User[]>("/api/v1/users");
    clear(usersBox);
    usersBox.append(h("table", { id: "users-table" },
      h("thead", {}, h("tr", {}, ...["User", "Role", "Created", "State", ""].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, ...users.map((user) => h("tr", { dataset: { user: user.name }, class: selected?.id === user.id ? "selected" : undefined },
        h("td", {}, user.name), h("td", {}, user.role), h("td", {}, formatDate(user.created_at)),
        h("td", {}, user.disabled ? "disabled" : "active"),
        h("td", {}, h("button", { type: "button", class: "secondary", dataset: { action: "tokens" },
          "aria-controls": "tokens", onclick: () => { selected = user; void guarded(ctx, async () => { await loadUsers(); await loadTokens(); }); } },
        `Tokens of ${user.name}`)))))));
  };

  const loadTokens = async (): Promise<void> => {
    if (!selected) return;
    const user = selected;
    const tokens = await ctx.api.get<TokenInfo[]>(`/api/v1/users/${user.id}/tokens`);
    const issue: HTMLButtonElement = h("button", { type: "button", id: "token-new", onclick: () => void guarded(ctx, async () => {
      ctx.clearBanner();
      const created = await ctx.api.post<NewToken>(`/api/v1/users/${user.id}/tokens`);
      showToken(user.name, created.token);
      await loadTokens();
    }, issue) }, `New token for ${user.name}`);
    clear(tokensBox);
    tokensBox.hidden = false;
    tokensBox.append(h("h2", { id: "tokens-title", tabindex: "-1" }, `Tokens of ${user.name}`),
      h("p", { class: "hint" }, "A token is shown only when it is made; the server keeps its prefix and a hash. A revoked token stops working at once."),
      tokens.length === 0 ? h("p", {}, "No token.") : h("table", { id: "tokens-table" },
        h("thead", {}, h("tr", {}, ...["Token", "Created", "Revoked", ""].map((t) => h("th", { scope: "col" }, t)))),
        h("tbody", {}, ...tokens.map((token) => {
          const revoke: HTMLButtonElement = h("button", { type: "button", class: "danger", dataset: { action: "revoke" },
            onclick: () => {
              if (!window.confirm(`Revoke token ${token.prefix}… of ${user.name}? Whoever uses it is signed out at their next request.`)) return;
              void guarded(ctx, async () => {
                ctx.clearBanner();
                await ctx.api.delete<TokenInfo>(`/api/v1/tokens/${token.id}`);
                ctx.showMessage(`Token ${token.prefix}… of ${user.name} revoked.`);
                await loadTokens();
              }, revoke);
            } }, "Revoke");
          return h("tr", { dataset: { tokenId: String(token.id), revoked: String(token.revoked_at !== null) } },
            h("td", {}, h("code", {}, `${token.prefix}…`)), h("td", {}, formatDate(token.created_at)),
            h("td", {}, token.revoked_at ? formatDate(token.revoked_at) : "–"),
            h("td", {}, token.revoked_at ? null : revoke));
        }))),
      h("div", { class: "form-actions" }, issue));
  };

  const name = h("input", { name: "name", autocomplete: "off" });
  const role = select("role", [["annotator", "annotator"], ["reviewer", "reviewer"], ["admin", "admin"]], "annotator");
  const create = h("button", { type: "submit", id: "user-create" }, "Create user");
  const form = h("form", { class: "panel", id: "user-form", "aria-labelledby": "user-form-title" },
    h("h2", { id: "user-form-title" }, "New user"),
    h("div", { class: "grid-form" },
      field("user-name", "User name", name, "letters, digits and _ . @ -"),
      field("user-role", "Role", role, "annotators label, reviewers also review, admins manage")),
    h("div", { class: "form-actions" }, create));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    void guarded(ctx, async () => {
      ctx.clearBanner();
      const created = await ctx.api.post<UserWithToken>("/api/v1/users", { name: name.value.trim(), role: role.value });
      form.reset();
      selected = created.user;
      showToken(created.user.name, created.token);
      await loadUsers();
      await loadTokens();
    }, create);
  });

  container.append(h("section", { class: "users" }, h("h1", {}, "Users and tokens"), tokenSlot,
    h("div", { class: "two-col" }, h("div", {}, form, h("div", { class: "panel" }, h("h2", {}, "Users"), usersBox)), tokensBox)));
  await loadUsers();
}

function newTokenBox(owner: string, token: string, done: () => void): HTMLElement {
  const status = h("span", { role: "status", class: "muted", id: "token-copied" });
  const code = h("code", { id: "new-token" }, token);
  const copy = h("button", { type: "button", id: "token-copy", onclick: async () => {
    try {
      await navigator.clipboard.writeText(token);
      status.textContent = "Copied.";
    } catch {
      // No clipboard permission (an http:// address other than localhost): select it for Ctrl+C instead.
      const range = document.createRange();
      range.selectNodeContents(code);
      window.getSelection()?.removeAllRanges();
      window.getSelection()?.addRange(range);
      status.textContent = "Selected: press Ctrl+C to copy.";
    }
  } }, "Copy token");
  return h("div", { class: "token-box", role: "region", "aria-label": `New token for ${owner}` },
    h("p", {}, h("strong", {}, `New token for ${owner}. `), "It is shown only this once: copy it now and hand it over in person or through a safe channel."),
    h("div", { class: "token-row" }, code, copy, h("button", { type: "button", class: "secondary", onclick: done }, "Done, hide it"), status));
}
