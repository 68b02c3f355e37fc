// One execution: what it is, why it failed, what the operator may do, its tasks and every failed
// attempt. Each part is a function of the execution, so a new part (say, the steps of a task) is
// one more function in the list at the end. Refreshes itself while the execution runs.
import { get } from "../api.js";
import { executionActions } from "../actions.js";
import { errorCard } from "../cards.js";
import { h, add, badge, heading, isTerminal, json, shortId, table, temporalLink, when } from "../dom.js";
import { announce } from "../notify.js";
import { pagedList } from "../paging.js";

function summary(e) {
  const facts = [
    ["Crew", e.crew_name],
    ["Created", when(e.created_at)],
    ["Started", when(e.started_at)],
    ["Finished", when(e.finished_at)],
    ["Workflow", h("span", { class: "mono" }, e.workflow_id)],
    ["Temporal", temporalLink(e)],
    ["Gaps", e.gaps.length ? e.gaps.join(", ") : "none"],
  ];
  return h(
    "section",
    { "aria-labelledby": "summary-title" },
    h("h2", { id: "summary-title", class: "visually-hidden" }, "Summary"),
    h("dl", { class: "facts" }, facts.map(([term, value]) => [h("dt", {}, term), h("dd", {}, value)])),
    h("details", {}, h("summary", {}, "Inputs"), json(e.inputs)),
  );
}

function tasks(e) {
  const rows = e.tasks.map((t) => [
    t.name,
    t.agent,
    badge(t.status),
    // Completed without an attempt: its output came from a dead letter's checkpoint.
    t.status === "completed" && t.attempts === 0 ? "0 (reused)" : t.attempts,
    t.model || "—",
    t.error ? h("span", {}, h("code", {}, t.error.code), h("span", { class: "detail" }, t.error.message)) : "—",
    when(t.started_at),
    when(t.finished_at),
  ]);
  const outputs = e.tasks
    .filter((t) => t.output)
    .map((t) => h("details", {}, h("summary", {}, `Output of ${t.name}`), h("pre", { class: "output" }, t.output)));
  return h(
    "section",
    { "aria-labelledby": "tasks-title" },
    h("h2", { id: "tasks-title" }, "Tasks"),
    table("Tasks in order", ["Task", "Agent", "Status", "Attempts", "Model", "Last error", "Started", "Finished"], rows),
    outputs,
  );
}

async function attempts(e, signal) {
  const list = (cursor) => get(`/api/v1/executions/${encodeURIComponent(e.id)}/errors`, { limit: 100, cursor }, signal);
  const row = (r) => [
    when(r.occurred_at),
    r.task,
    `${r.attempt} (${r.category_attempt}/${r.max_attempts})`,
    h("code", {}, r.code),
    r.category,
    r.severity,
    r.status_code || "—",
    r.next_retry_delay_s === null ? "—" : `${r.next_retry_delay_s.toFixed(1)} s`,
    h("span", { class: "detail" }, r.message),
  ];
  const headers = ["When", "Task", "Attempt (category)", "Code", "Category", "Severity", "HTTP", "Next retry in", "Message"];
  const draw = (items) => table("Failed attempts, oldest first", headers, items.map(row), "no attempt failed.");
  return h(
    "section",
    { "aria-labelledby": "attempts-title" },
    h("h2", { id: "attempts-title" }, "Failed attempts"),
    pagedList(await list(), list, draw, "attempts"),
  );
}

function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      reject(new DOMException("view left", "AbortError"));
    });
  });
}

/** Until it ends, the view follows the execution: it is drawn again when the API says something
 * changed; while paused, only when its status did (the operator may be typing a decision). */
async function follow(e, { signal, reload }) {
  if (isTerminal(e.status)) return;
  const seen = JSON.stringify(e);
  for (let wait = 500; ; wait = Math.min(wait * 2, 4000)) {
    await sleep(wait, signal);
    const now = await get(`/api/v1/executions/${encodeURIComponent(e.id)}`, {}, signal);
    if (e.status === "paused" ? now.status !== e.status : JSON.stringify(now) !== seen) {
      if (now.status !== e.status) announce(`Execution ${shortId(e.id)} is now ${now.status}.`);
      reload();
      return;
    }
  }
}

export async function render(view, context) {
  const [id] = context.params;
  const e = await get(`/api/v1/executions/${encodeURIComponent(id)}`, {}, context.signal);
  const failure = e.error ? errorCard(e.error, e.status === "failed" ? "Why it failed" : "Error") : null;
  add(
    view,
    heading(`Execution ${shortId(e.id)} `, badge(e.status)),
    summary(e),
    failure,
    executionActions(e, context),
    tasks(e),
    await attempts(e, context.signal),
  );
  follow(e, context).catch(() => {}); // a left view or a failed poll ends following; reopening starts over
}
