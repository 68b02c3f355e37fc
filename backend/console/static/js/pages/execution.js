// One execution: what it is and what it cost, why it failed, what the operator may do, its tasks
// (outputs, structured ones, people's decisions on them), every LLM and tool call, and every failed
// attempt. Each part is a function of the execution, so a new part is one more function in the list
// at the end. Refreshes itself while the execution runs.
import { get } from "../api.js";
import { executionActions } from "../actions.js";
import { errorCard } from "../cards.js";
import { h, add, badge, heading, isTerminal, json, shortId, sleep, table, temporalLink, when } from "../dom.js";
import { announce } from "../notify.js";
import { feedbackHistory, outputBody } from "../outputs.js";
import { pagedList } from "../paging.js";

const count = (n) => n.toLocaleString("en-US");

/** US dollars, to two significant digits below a cent (LLM calls cost fractions of one). */
function dollars(value) {
  const digits = value >= 0.01 || value === 0 ? 2 : Math.min(12, 1 - Math.floor(Math.log10(value)));
  return `$${value.toFixed(digits)}`;
}

/** A cost {tokens_in, tokens_out, cost_usd} in USD, honestly: tokens spent at 0 USD were spent on
 * a model without a known price, so the cost is unknown, not free. */
function usd(cost, value = cost.cost_usd) {
  if (cost.tokens_in + cost.tokens_out === 0 && cost.cost_usd === 0) return "—";
  if (cost.cost_usd === 0) return "unknown (no known price)";
  return dollars(value);
}

function costSummary(e) {
  const c = e.cost;
  const facts = [
    ["Tokens in", h("span", { class: "tokens-in" }, count(c.tokens_in))],
    ["Tokens out", h("span", { class: "tokens-out" }, count(c.tokens_out))],
    ["Cost", h("span", { class: "cost-usd" }, usd(c))],
    ["Wasted", h("span", { class: "wasted-usd" }, usd(c, c.wasted_cost_usd))],
  ];
  return h(
    "section",
    { "aria-labelledby": "cost-title" },
    h("h2", { id: "cost-title" }, "Cost"),
    h("dl", { class: "facts" }, facts.map(([term, value]) => [h("dt", {}, term), h("dd", {}, value)])),
    h(
      "p",
      { class: "hint" },
      "Over every attempt. USD counts the calls to models with a known price (a call without one says unknown under Steps); " +
        "wasted is what calls of failed attempts cost that no later attempt reused.",
    ),
  );
}

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

/** A task's cost, its tokens (in / out) under it. */
function taskCost(cost) {
  if (cost.tokens_in + cost.tokens_out === 0 && cost.cost_usd === 0) return "—";
  return h("span", {}, usd(cost), h("span", { class: "sub" }, `${count(cost.tokens_in)} / ${count(cost.tokens_out)} tokens`));
}

function tasks(e) {
  const rows = e.tasks.map((t) => [
    t.name,
    t.agent,
    badge(t.status),
    // Completed without an attempt: its output came from a dead letter's checkpoint.
    t.status === "completed" && t.attempts === 0 ? "0 (reused)" : t.attempts,
    t.model ? h("span", { class: "nowrap" }, t.model) : "—",
    taskCost(t.cost),
    t.error ? h("span", {}, h("code", {}, t.error.code), h("span", { class: "detail" }, t.error.message)) : "—",
    when(t.started_at),
    when(t.finished_at),
  ]);
  const headers = ["Task", "Agent", "Status", "Attempts", "Model", "Cost", "Last error", "Started", "Finished"];
  // What each task produced: a structured output is shown at once, a text behind its summary.
  const outputs = e.tasks
    .filter((t) => t.output || t.json_dict || t.feedback.length)
    .map((t) => {
      const about = [t.output_format !== "raw" ? t.output_format : null, t.output_file ? `file ${t.output_file}` : null].filter(Boolean);
      return h(
        "div",
        { class: "task-output" },
        h(
          "details",
          { open: Boolean(t.json_dict) || t.status === "awaiting_feedback" },
          h("summary", {}, `Output of ${t.name}${about.length ? ` (${about.join(", ")})` : ""}`),
          outputBody(t),
        ),
        feedbackHistory(t),
      );
    });
  return h(
    "section",
    { "aria-labelledby": "tasks-title" },
    h("h2", { id: "tasks-title" }, "Tasks"),
    table("Tasks in order", headers, rows),
    outputs,
  );
}

function duration(ms) {
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(1)} s`;
}

// A call served from the journal made no request: the word says so, the colour only helps.
const SERVED = { ok: ["live", "live"], replayed: ["replayed", "replayed"], failed: ["failed", "live, failed"] };

async function steps(e, signal) {
  const list = (cursor) => get(`/api/v1/executions/${encodeURIComponent(e.id)}/steps`, { limit: 100, cursor }, signal);
  const row = (s, i) => {
    const [kind, text] = SERVED[s.outcome] || [s.outcome, s.outcome];
    // Only a live call that answered reports tokens. A tool call has no price; an LLM call without
    // one, or that failed (no usage came back), is unknown, not free; a replayed one paid nothing.
    const used = s.kind === "llm" && s.outcome === "ok";
    const price =
      s.kind !== "llm" ? "—" : s.outcome === "replayed" ? "none (replayed)" : s.cost_usd === null ? "unknown" : dollars(s.cost_usd);
    return [
      String(i + 1),
      s.task,
      s.revision ? `${s.attempt} (revision ${s.revision})` : String(s.attempt),
      s.kind,
      h("span", { class: "mono" }, s.name),
      when(s.started_at),
      duration(s.duration_ms),
      used ? `${count(s.tokens_in)} / ${count(s.tokens_out)}` : "—",
      price,
      h("span", { class: `badge badge-${kind}` }, text),
      s.error_code ? h("code", {}, s.error_code) : "—",
    ];
  };
  const headers = ["Call", "Task", "Attempt", "Kind", "Name", "Started", "Duration", "Tokens in / out", "Cost", "Served", "Error"];
  const draw = (items) => table("LLM and tool calls, in the order they were made", headers, items.map(row), "no call recorded yet.");
  return h(
    "section",
    { "aria-labelledby": "steps-title" },
    h("h2", { id: "steps-title" }, "Steps"),
    h(
      "p",
      { class: "hint" },
      "Every LLM and tool call of every attempt. A replayed call was served from the journal to a retried attempt: no request, nothing paid again.",
    ),
    pagedList(await list(), list, draw, "steps"),
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

/** Until it ends, the view follows the execution: it is drawn again when the API says something
 * changed; while it waits for a person (paused, awaiting feedback), only when its status did (the
 * operator may be typing a decision). */
async function follow(e, { signal, reload }) {
  if (isTerminal(e.status)) return;
  const waiting = e.status === "paused" || e.status === "awaiting_feedback";
  const seen = JSON.stringify(e);
  // Which output awaits a decision: another revision of it (rejected from elsewhere) is drawn anew.
  const awaited = (x) => x.tasks.filter((t) => t.status === "awaiting_feedback").map((t) => `${t.name}/${t.revision}`).join();
  for (let wait = 500; ; wait = Math.min(wait * 2, 4000)) {
    await sleep(wait, signal);
    const now = await get(`/api/v1/executions/${encodeURIComponent(e.id)}`, {}, signal);
    if (waiting ? now.status !== e.status || awaited(now) !== awaited(e) : JSON.stringify(now) !== seen) {
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
    costSummary(e),
    failure,
    executionActions(e, context),
    tasks(e),
    ...(await Promise.all([steps(e, context.signal), attempts(e, context.signal)])),
  );
  follow(e, context).catch(() => {}); // a left view or a failed poll ends following; reopening starts over
}
