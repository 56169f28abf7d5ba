// The learning curve: per-class Dice against the number of labelled cases, one point per completed cycle,
// drawn with Chart.js (bundled; only the parts registered here) and given as a table beside it.
import { Chart, Legend, LinearScale, LineController, LineElement, PointElement, Tooltip } from "chart.js";
import type { AppContext } from "../../context";
import { formatNumber, h } from "../../dom";
import { curveRows, learningCurve, type CurveSeries } from "../../admin/curveData";
import type { ModelVersion } from "../../admin/types";
import type { Project } from "../../types";
import { cssColor } from "../../labels";

Chart.register(LineController, LineElement, PointElement, LinearScale, Legend, Tooltip);


export async function renderCurve(panel: HTMLElement, ctx: AppContext, project: Project): Promise<void> {
  const models = await ctx.api.get<ModelVersion[]>(`/api/v1/projects/${project.id}/models`);
  const series = learningCurve(models, project.labels);
  const box = h("div", { class: "panel" }, h("h2", {}, "Learning curve"),
    h("p", { class: "hint" }, "Dice of each structure on the validation cases (solid) and on the test cases (dashed, when there are any), against the number of labelled cases the model was trained on. One point per completed cycle."));
  panel.append(box);
  const figure = h("figure", { id: "learning-curve", dataset: { points: JSON.stringify(series.map((s) => ({ label: s.label, split: s.split, className: s.className, points: s.points.map(({ x, y, version }) => ({ x, y, version })) }))) } });
  box.append(figure);
  if (series.length === 0) {
    figure.append(h("p", {}, models.length === 0
      ? "No completed cycle yet: the curve starts with the first model version."
      : "No Dice measured yet: the models had no validation case. Move a few labelled cases to the validation split (Ranking or Cases tab) and run a cycle."));
    return;
  }
  const canvas = h("canvas", { role: "img", "aria-label": "Learning curve: Dice per structure against labelled cases; the table below has the same figures" });
  figure.append(h("div", { class: "chart-box" }, canvas), h("figcaption", { class: "hint" }, `${models.length} model version${models.length === 1 ? "" : "s"}.`));
  const chart = new Chart(canvas, {
    type: "line",
    data: { datasets: datasets(series, project.labels) },
    options: {
      animation: false,
      maintainAspectRatio: false,
      parsing: false,
      scales: {
        x: { type: "linear", title: { display: true, text: "labelled cases trained on" }, ticks: { precision: 0 } },
        y: { type: "linear", min: 0, max: 1, title: { display: true, text: "Dice" } },
      },
      plugins: {
        legend: { position: "bottom" },
        tooltip: { callbacks: { label: (item) => `${item.dataset.label}: ${formatNumber(item.parsed.y)} with ${item.parsed.x} cases` } },
      },
    },
  });
  ctx.onLeave(() => chart.destroy());
  const rows = curveRows(series);
  box.append(h("table", { id: "curve-table" },
    h("caption", { class: "hint" }, "The curve's figures"),
    h("thead", {}, h("tr", {}, ...["Model", "Cycle", "Labelled cases", ...series.map((s) => s.label)].map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, ...rows.map((row) => h("tr", { dataset: { x: String(row.x), version: String(row.version) } },
      h("td", {}, `v${row.version}`), h("td", {}, `#${row.cycleId}`), h("td", { class: "num" }, row.x),
      ...row.values.map((v) => h("td", { class: "num" }, formatNumber(v))))))));
}

function datasets(series: CurveSeries[], labels: readonly string[]) {
  return series.map((s) => {
    // The structure's colour in the annotator workspace, so a curve and a drawing read the same way.
    const colour = cssColor(labels.indexOf(s.className));
    return {
      label: s.label,
      data: s.points.map((p) => ({ x: p.x, y: p.y })),
      borderColor: colour,
      backgroundColor: colour,
      borderDash: s.split === "test" ? [6, 4] : [],
      pointStyle: s.split === "test" ? ("rectRot" as const) : ("circle" as const),
      pointRadius: 5,
      tension: 0,
    };
  });
}
