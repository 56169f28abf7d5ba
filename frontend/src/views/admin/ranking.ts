// Ranking: the pool in queue order (pinned first, then rank), with pin / exclude / split per case.
import type { AppContext } from "../../context";
import { append, clear, formatDate, h } from "../../dom";
import { pageInfo } from "../../admin/pagination";
import type { Case, QueuePage, QueueStats } from "../../admin/types";
import { guarded, pager, select } from "../../admin/ui";
import type { Project } from "../../types";

export const RANKING_PAGE = 25;
const SPLITS = ["pool", "validation", "test"] as const;

export async function renderRanking(panel: HTMLElement, ctx: AppContext, project: Project): Promise<void> {
  const body = h("div", { id: "ranking" });
  panel.append(h("div", { class: "panel" },
    h("h2", {}, "Ranking"),
    h("p", { class: "hint" }, "The pool in the order cases are handed out: pinned cases first, then the model's rank. ",
      "Moving a case to validation or test takes it out of the queue (and out of this list); it is then used to measure the model."),
    body));
  let offset = 0;

  const load = async (): Promise<void> => {
    const [page, stats] = await Promise.all([
      ctx.api.get<QueuePage>(`/api/v1/projects/${project.id}/queue`, { limit: RANKING_PAGE, offset }),
      ctx.api.get<QueueStats>(`/api/v1/projects/${project.id}/queue/stats`),
    ]);
    if (page.items.length === 0 && offset > 0) {
      offset = Math.max(0, offset - RANKING_PAGE);
      return load();
    }
    const info = pageInfo(offset, RANKING_PAGE, page.items.length, stats.pool);
    const go = (next: number) => { offset = next; void guarded(ctx, load); };
    const patch = (caseId: number, change: Partial<Pick<Case, "pinned" | "excluded" | "split">>, button?: HTMLButtonElement) =>
      guarded(ctx, async () => {
        ctx.clearBanner();
        await ctx.api.patch<Case>(`/api/v1/cases/${caseId}`, change);
        await load();
      }, button);
    const rows = page.items.map((item) => {
      const split = select("split", SPLITS, "pool");
      split.setAttribute("aria-label", `Split of case ${item.case_id}`);
      split.addEventListener("change", () => void patch(item.case_id, { split: split.value }));
      const pin: HTMLButtonElement = h("button", { type: "button", class: "secondary", dataset: { action: "pin" },
        "aria-pressed": String(item.pinned), onclick: () => void patch(item.case_id, { pinned: !item.pinned }, pin) },
      item.pinned ? "Unpin" : "Pin");
      const exclude: HTMLButtonElement = h("button", { type: "button", class: "secondary", dataset: { action: "exclude" },
        "aria-pressed": String(item.status === "excluded"), onclick: () => void patch(item.case_id, { excluded: item.status !== "excluded" }, exclude) },
      item.status === "excluded" ? "Include" : "Exclude");
      const holder = item.leased_by ? `${item.leased_by} (until ${formatDate(item.lease_expires_at)})` : "–";
      return h("tr", { dataset: { caseId: String(item.case_id) } },
        h("td", { class: "num" }, item.rank ?? "–"),
        h("td", {}, `#${item.case_id}`),
        h("td", {}, item.patient),
        h("td", { class: "num" }, item.score === null ? "–" : item.score.toPrecision(4)),
        h("td", {}, item.status, item.pinned ? " · pinned" : ""),
        h("td", {}, holder),
        h("td", {}, split),
        h("td", {}, h("span", { class: "row-actions" }, pin, exclude)));
    });
    clear(body);
    append(body,
      page.ranking_id === null ? h("p", { class: "muted" }, "No ranking published yet: the order below is the cold-start order.") : null,
      rows.length === 0 ? h("p", {}, "No case in the pool.") : h("table", { id: "ranking-table" },
        h("thead", {}, h("tr", {}, ...["Rank", "Case", "Patient", "Score", "Status", "Holder", "Split", "Queue"]
          .map((text) => h("th", { scope: "col", class: text === "Rank" || text === "Score" ? "num" : undefined }, text)))),
        h("tbody", {}, ...rows)),
      pager(info, go, "Ranking"));
  };
  await load();
}
