// Cycles: the list with live progress (polled every 2 s while one is queued or running), the start form and cancel.
import type { AppContext } from "../../context";
import { clear, formatDate, h } from "../../dom";
import { CYCLE_FIELDS, cyclePayload, formValues, type CycleField } from "../../admin/cycleForm";
import { formatSeconds } from "../../admin/format";
import { cycleProgress, isActive } from "../../admin/progress";
import type { Cycle } from "../../admin/types";
import { field, guarded, select } from "../../admin/ui";
import type { Project } from "../../types";

export const POLL_MS = 2000;

export async function renderCycles(panel: HTMLElement, ctx: AppContext, project: Project): Promise<void> {
  const list = h("div", { id: "cycles" });
  let timer: number | undefined;
  let left = false;
  let watching = new Set<number>(); // cycles seen active: their end is announced in the banner
  ctx.onLeave(() => {
    left = true;
    window.clearTimeout(timer);
  });
  const form = startForm(ctx, project, () => refresh());

  const refresh = async (): Promise<void> => {
    window.clearTimeout(timer);
    const cycles = await ctx.api.get<Cycle[]>(`/api/v1/projects/${project.id}/cycles`);
    if (left) return;
    clear(list);
    list.append(cycles.length === 0 ? h("p", {}, "No cycle yet: start the first one below once some cases are labelled.")
      : cyclesTable(ctx, cycles, refresh, (cycle) => form.fill(cycle)));
    list.dataset.active = String(cycles.some(isActive));
    for (const cycle of cycles) {
      if (watching.has(cycle.id) && !isActive(cycle)) {
        const outcome = cycleProgress(cycle).text;
        if (cycle.status === "done") ctx.showMessage(`Cycle ${cycle.id} ${outcome}. See the Models and Learning curve tabs.`);
        else ctx.showError(`Cycle ${cycle.id} ${outcome}`);
      }
    }
    watching = new Set(cycles.filter(isActive).map((c) => c.id));
    if (cycles.some(isActive)) poll();
  };
  // While a cycle is active: a failed poll (server restarting) is shown and tried again, until the tab is left.
  const poll = (): void => {
    timer = window.setTimeout(() => {
      refresh().catch((exc: unknown) => {
        if (left) return;
        ctx.showError(exc);
        poll();
      });
    }, POLL_MS);
  };
  panel.append(h("div", { class: "panel" }, h("h2", {}, "Cycles"),
    h("p", { class: "hint" }, "A cycle trains a model on the labelled pool cases, measures it on the validation and test cases, scores the open cases and publishes a new ranking."),
    list), form.element);
  await refresh();
}

function cyclesTable(ctx: AppContext, cycles: Cycle[], refresh: () => Promise<void>, reuse: (cycle: Cycle) => void): HTMLElement {
  const rows = cycles.map((cycle) => {
    const progress = cycleProgress(cycle);
    const actions = h("span", { class: "row-actions" });
    if (isActive(cycle)) {
      const cancel: HTMLButtonElement = h("button", { type: "button", class: "danger", dataset: { action: "cancel" },
        disabled: cycle.cancel_requested,
        onclick: () => {
          if (!window.confirm(`Cancel cycle ${cycle.id}? The current model and ranking stay in service.`)) return;
          void guarded(ctx, async () => {
            ctx.clearBanner();
            await ctx.api.delete<Cycle>(`/api/v1/cycles/${cycle.id}`);
            ctx.showMessage(`Cycle ${cycle.id}: cancel requested.`);
            await refresh();
          }, cancel);
        } }, "Cancel");
      actions.append(cancel);
    }
    actions.append(h("button", { type: "button", class: "secondary", dataset: { action: "reuse" }, onclick: () => reuse(cycle),
      title: "Fill the start form with this cycle's parameters" }, "Reuse parameters"));
    const timings = Object.entries(cycle.timings ?? {}).map(([phase, s]) => `${phase} ${formatSeconds(s)}`).join(", ");
    return h("tr", { dataset: { cycleId: String(cycle.id), status: cycle.status } },
      h("td", {}, `#${cycle.id}`),
      h("td", { class: `status-${cycle.status}` }, cycle.status),
      h("td", { class: "cycle-progress" },
        h("div", { class: "cycle-progress-text", dataset: { status: cycle.status } }, progress.text),
        progress.fraction !== null && isActive(cycle) ? h("progress", { max: 1, value: progress.fraction, "aria-label": `Progress of cycle ${cycle.id}` }) : null),
      h("td", {}, cycle.strategy + (cycle.warm_start ? " · warm start" : "")),
      h("td", {}, formatDate(cycle.created_at)),
      h("td", {}, formatDate(cycle.finished_at)),
      h("td", {}, timings || "–"),
      h("td", {}, actions));
  });
  return h("table", { id: "cycles-table" },
    h("thead", {}, h("tr", {}, ...["Cycle", "Status", "Progress", "Strategy", "Created", "Finished", "Time per phase", ""]
      .map((text) => h("th", { scope: "col" }, text)))),
    h("tbody", {}, ...rows));
}

function control(f: CycleField): HTMLInputElement | HTMLSelectElement {
  switch (f.kind) {
    case "bool":
      return select(f.name, [["", "default"], ["true", "yes"], ["false", "no"]], "");
    case "choice":
      return select(f.name, [["", "default"], ...(f.options ?? []).map((o): [string, string] => [o, o])], "");
    case "text":
      return h("input", { name: f.name, placeholder: "default", autocomplete: "off", list: f.options ? `${f.name}-options` : undefined });
    case "int":
    case "ints":
    case "intOrInts":
      return h("input", { name: f.name, placeholder: "default", inputmode: f.kind === "int" ? "numeric" : "text", autocomplete: "off" });
    case "float":
      return h("input", { name: f.name, placeholder: "default", inputmode: "decimal", autocomplete: "off" });
  }
}

function startForm(ctx: AppContext, project: Project, started: () => Promise<void>): { element: HTMLElement; fill: (cycle: Cycle) => void } {
  const controls = new Map<string, HTMLInputElement | HTMLSelectElement>();
  const fields = CYCLE_FIELDS.map((f) => {
    const input = control(f);
    controls.set(f.name, input);
    return field(`cycle-${f.name.replace(/_/g, "-")}`, f.label, input, f.hint);
  });
  const datalists = CYCLE_FIELDS.filter((f) => f.kind === "text" && f.options)
    .map((f) => h("datalist", { id: `${f.name}-options` }, ...(f.options ?? []).map((o) => h("option", { value: o }))));
  const submit = h("button", { type: "submit", id: "cycle-start" }, "Start cycle");
  const element = h("form", { class: "panel", id: "cycle-form", "aria-labelledby": "cycle-form-title" },
    h("h2", { id: "cycle-form-title" }, "Start a cycle"),
    h("p", { class: "hint" }, "Leave a field empty for the server's default. The server checks every value and says what it refuses."),
    h("div", { class: "grid-form" }, ...fields), ...datalists,
    h("div", { class: "form-actions" }, submit,
      h("button", { type: "reset", class: "secondary" }, "Clear")));
  element.addEventListener("submit", (event) => {
    event.preventDefault();
    const values: Record<string, string> = {};
    for (const [name, input] of controls) values[name] = input.value;
    void guarded(ctx, async () => {
      ctx.clearBanner();
      const cycle = await ctx.api.post<Cycle>(`/api/v1/projects/${project.id}/cycles`, cyclePayload(values));
      ctx.showMessage(`Cycle ${cycle.id} queued.`);
      await started();
    }, submit);
  });
  const fill = (cycle: Cycle) => {
    const values = formValues({ ...cycle.params, strategy: cycle.strategy, warm_start: cycle.warm_start });
    for (const [name, input] of controls) input.value = values[name] ?? "";
    controls.get("strategy")?.focus();
    element.scrollIntoView({ block: "start" });
  };
  return { element, fill };
}
