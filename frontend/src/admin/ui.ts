// Small shared pieces of the admin views: labelled fields, guarded actions, the pager.
import type { AppContext } from "../context";
import { h } from "../dom";
import type { PageInfo } from "./pagination";

/** Runs an action from a button or form; any error goes to the banner, and the button is disabled meanwhile. */
export async function guarded(ctx: AppContext, action: () => Promise<void>, button?: HTMLButtonElement | null): Promise<void> {
  if (button) button.disabled = true;
  try {
    await action();
  } catch (exc) {
    ctx.showError(exc);
  } finally {
    if (button) button.disabled = false;
  }
}

/** A label above its control, with an optional hint that the control names as its description. */
export function field(id: string, labelText: string, control: HTMLElement, hint?: string): HTMLElement {
  control.id = id;
  if (hint) control.setAttribute("aria-describedby", `${id}-hint`);
  return h("div", { class: "field" },
    h("label", { for: id }, labelText),
    control,
    hint ? h("small", { class: "hint", id: `${id}-hint` }, hint) : null);
}

export function select(name: string, options: ReadonlyArray<string | [string, string]>, value = ""): HTMLSelectElement {
  const element = h("select", { name });
  for (const option of options) {
    const [optionValue, text] = Array.isArray(option) ? option : [option, option];
    element.append(h("option", { value: optionValue, selected: optionValue === value }, text));
  }
  element.value = value;
  return element;
}

export function pager(info: PageInfo, go: (offset: number) => void, label: string): HTMLElement {
  return h("nav", { class: "pager", "aria-label": `${label} pages` },
    h("button", { type: "button", class: "secondary", disabled: !info.hasPrev, onclick: () => go(info.prevOffset) }, "‹ Previous"),
    h("span", { class: "pager-text", "aria-live": "polite" }, info.text),
    h("button", { type: "button", class: "secondary", disabled: !info.hasNext, onclick: () => go(info.nextOffset) }, "Next ›"));
}

/** Saves a server file that needs the bearer header (a plain link would go without it). */
export async function download(ctx: AppContext, path: string, filename: string): Promise<void> {
  const data = await ctx.api.bytes(path);
  const url = URL.createObjectURL(new Blob([data]));
  const link = h("a", { href: url, download: filename, hidden: true });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}
