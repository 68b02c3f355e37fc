// Alerts raised (one per incident after dedup) and whether every sink took them (GET /api/v1/alerts).
import { get } from "../api.js";
import { h, add, executionLink, heading, table, when } from "../dom.js";
import { pagedList } from "../paging.js";

const HEADERS = ["Alert", "Severity", "Rule", "Execution", "Raised", "Delivery"];

function delivery(a) {
  const attempts = `${a.delivery_attempts} attempt${a.delivery_attempts === 1 ? "" : "s"}`;
  if (a.delivered) return h("span", {}, "delivered ", when(a.delivered_at), ` (${attempts})`);
  return h(
    "span",
    { class: "not-delivered" },
    h("strong", {}, "not yet"),
    ` (${attempts})`,
    a.last_error ? h("span", { class: "detail" }, `last error: ${a.last_error}`) : null,
  );
}

function row(a) {
  return [
    h("span", { class: "alert-title" }, a.title, a.detail ? h("span", { class: "detail" }, a.detail) : null),
    h("span", { class: `badge badge-severity-${a.severity}` }, a.severity),
    h("span", { class: "nowrap" }, a.rule),
    a.execution_id ? executionLink(a.execution_id) : "—",
    when(a.created_at),
    delivery(a),
  ];
}

export async function render(view, { signal }) {
  const list = (cursor) => get("/api/v1/alerts", { limit: 50, cursor }, signal);
  const draw = (items) => table("Alerts, newest first", HEADERS, items.map(row), "no alert was raised.");
  add(
    view,
    heading("Alerts"),
    h("p", { class: "lead" }, "Delivery retries until every sink (log, webhook, Slack) took the alert."),
    pagedList(await list(), list, draw, "alerts"),
  );
}
