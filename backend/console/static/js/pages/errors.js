// Errors across executions: a trend per category over a chosen window (GET /api/v1/errors/trends)
// and the groups of the same fault (GET /api/v1/errors/groups), most frequent first.
import { get } from "../api.js";
import { categories } from "../catalog.js";
import { h, add, field, heading, select, table, when } from "../dom.js";
import { drawChart, series, summary } from "../trend.js";

// window → [label, its length, the trend's interval (the API's syntax), that interval in ms]
const WINDOWS = {
  "1h": ["hour", 3600000, "5m", 300000],
  "24h": ["24 hours", 86400000, "1h", 3600000],
  "7d": ["7 days", 7 * 86400000, "6h", 21600000],
  "30d": ["30 days", 30 * 86400000, "1d", 86400000],
};

function filterForm(windowKey, category, categoryList) {
  const windowSelect = select("window", Object.entries(WINDOWS).map(([key, [label]]) => [key, `last ${label}`]), windowKey);
  const categorySelect = select("category", [["", "every category"], ...categoryList.map((c) => [c, c])], category);
  const form = h(
    "form",
    { class: "filters", role: "search", "aria-label": "Choose the errors shown" },
    field("Window", windowSelect),
    field("Category", categorySelect),
    h("div", { class: "filter-buttons" }, h("button", { type: "submit" }, "Show")),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const chosen = new URLSearchParams({ window: windowSelect.value });
    if (categorySelect.value) chosen.set("category", categorySelect.value);
    location.hash = `#/errors?${chosen}`;
  });
  return form;
}

function trendSection(data, windowLabel, { shown, signal }) {
  const text = summary(data, windowLabel);
  const canvas = h("canvas", { id: "trend-chart", role: "img", "aria-label": text });
  shown.then(() => {
    const chart = drawChart(canvas, data);
    signal.addEventListener("abort", () => chart.destroy()); // the view was left: free its observers
  });
  const rows = data.labels.map((bucket, i) => [bucket, ...data.series.map((s) => s.counts[i])]);
  return h(
    "section",
    { "aria-labelledby": "trend-title" },
    h("h2", { id: "trend-title" }, `Errors per category, last ${windowLabel}`),
    h("p", { class: "chart-summary" }, text),
    h("div", { class: "chart-box" }, canvas),
    data.total
      ? h("details", {}, h("summary", {}, "The chart's numbers as a table"), table("Errors per bucket and category", ["Bucket", ...data.series.map((s) => s.category)], rows))
      : null,
  );
}

function groupsSection(groups, windowLabel) {
  const rows = groups.map((g) => [
    h("code", {}, g.code),
    h("a", { href: `#/executions?error_category=${encodeURIComponent(g.category)}` }, g.category),
    g.severity,
    g.count,
    g.executions,
    when(g.first_seen),
    when(g.last_seen),
    h("span", { class: "detail" }, g.sample_message),
  ]);
  return h(
    "section",
    { "aria-labelledby": "groups-title" },
    h("h2", { id: "groups-title" }, "Error groups"),
    h("p", { class: "hint" }, "One group is one fault (same fingerprint); a category links to the executions that met it."),
    table(
      `Error groups of the last ${windowLabel}, most frequent first`,
      ["Code", "Category", "Severity", "Count", "Executions", "First seen", "Last seen", "Sample message"],
      rows,
      "no error in this window.",
    ),
  );
}

export async function render(view, context) {
  const { query, signal } = context;
  const windowKey = WINDOWS[query.get("window")] ? query.get("window") : "24h";
  const [windowLabel, lengthMs, interval, intervalMs] = WINDOWS[windowKey];
  const category = query.get("category") || null;
  const untilMs = Date.now();
  const since = new Date(untilMs - lengthMs).toISOString();
  const [points, groups, categoryList] = await Promise.all([
    get("/api/v1/errors/trends", { since, interval, category }, signal),
    get("/api/v1/errors/groups", { since, category, limit: 100 }, signal),
    categories(),
  ]);
  const data = series(points, untilMs - lengthMs, untilMs, intervalMs);
  add(
    view,
    heading("Errors"),
    filterForm(windowKey, category, categoryList),
    trendSection(data, windowLabel, context),
    groupsSection(groups, windowLabel),
  );
}
