// Executions, newest first, filtered by status, crew and error category (GET /api/v1/executions).
import { get } from "../api.js";
import { currentTask } from "../actions.js";
import { STATUSES, categories } from "../catalog.js";
import { h, add, badge, executionLink, field, heading, select, table, temporalLink, when } from "../dom.js";
import { pagedList } from "../paging.js";

const FILTERS = ["status", "crew_name", "error_category"];
const HEADERS = ["Execution", "Crew", "Status", "Tasks done", "Error", "Created", "Temporal"];

function filterForm(query, categoryList, crewNames) {
  const status = select("status", [["", "any status"], ...STATUSES.map((s) => [s, s])], query.get("status"));
  const crew = h("input", { name: "crew_name", value: query.get("crew_name") || "", list: "crew-names", autocomplete: "off" });
  const category = select(
    "error_category",
    [["", "any (or none)"], ...categoryList.map((c) => [c, c])],
    query.get("error_category"),
  );
  const form = h(
    "form",
    { class: "filters", role: "search", "aria-label": "Filter executions" },
    field("Status", status),
    field("Crew", crew),
    h("datalist", { id: "crew-names" }, crewNames.map((name) => h("option", { value: name }))),
    field("Failed attempts of category", category),
    h("div", { class: "filter-buttons" }, h("button", { type: "submit" }, "Apply filters"), h("a", { href: "#/executions" }, "Clear")),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const chosen = new URLSearchParams();
    for (const name of FILTERS) {
      const value = form.elements[name].value.trim();
      if (value) chosen.set(name, value);
    }
    const search = chosen.toString();
    location.hash = `#/executions${search ? `?${search}` : ""}`;
  });
  return form;
}

function caption(query) {
  const parts = [];
  if (query.get("status")) parts.push(`status ${query.get("status")}`);
  if (query.get("crew_name")) parts.push(`crew ${query.get("crew_name")}`);
  if (query.get("error_category")) parts.push(`with ${query.get("error_category")} failures`);
  return parts.length ? `Executions: ${parts.join(", ")}` : "Executions, newest first";
}

function row(e) {
  const done = e.tasks.filter((t) => t.status === "completed").length;
  // An execution that has not ended shows the error its current task is stuck on (paused, retrying).
  const record = e.error || currentTask(e)?.error;
  const error = record ? h("span", {}, h("code", {}, record.code), ` · ${record.category}`) : "—";
  return [executionLink(e.id), e.crew_name, badge(e.status), `${done}/${e.tasks.length}`, error, when(e.created_at), temporalLink(e)];
}

export async function render(view, { query, signal }) {
  const filters = Object.fromEntries(FILTERS.map((name) => [name, query.get(name)]));
  const list = (cursor) => get("/api/v1/executions", { ...filters, limit: 50, cursor }, signal);
  const [first, categoryList, crews] = await Promise.all([list(), categories(), get("/api/v1/crews", { limit: 500 }, signal)]);
  const draw = (items) => table(caption(query), HEADERS, items.map(row), "no execution matches.");
  add(
    view,
    heading("Executions"),
    filterForm(query, categoryList, crews.items.map((c) => c.name)),
    pagedList(first, list, draw, "executions"),
  );
}
