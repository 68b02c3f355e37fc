// Executions paused for an operator (GET /api/v1/executions?status=paused): why each one stopped,
// and the decisions (resume, skip, abort) right there.
import { get } from "../api.js";
import { executionActions, currentTask } from "../actions.js";
import { errorCard } from "../cards.js";
import { h, add, heading, shortId, temporalLink, when } from "../dom.js";
import { pagedList } from "../paging.js";

function card(e, context) {
  const task = currentTask(e);
  return h(
    "article",
    { class: "card", "aria-labelledby": `paused-${e.id}` },
    h("h2", { id: `paused-${e.id}` }, `Execution ${shortId(e.id)} · ${e.crew_name}`),
    h(
      "p",
      { class: "card-links" },
      h("a", { href: `#/executions/${encodeURIComponent(e.id)}` }, "Open the execution"),
      " · ",
      temporalLink(e),
      " · created ",
      when(e.created_at),
    ),
    task && task.error ? errorCard(task.error, `Why task ${task.name} stopped`, 3, true) : null,
    executionActions(e, context, 3),
  );
}

export async function render(view, context) {
  const list = (cursor) => get("/api/v1/executions", { status: "paused", limit: 50, cursor }, context.signal);
  const draw = (items) =>
    items.length ? h("div", { class: "cards" }, items.map((e) => card(e, context))) : h("p", { class: "empty" }, "No execution is paused.");
  add(
    view,
    heading("Paused executions"),
    h("p", { class: "lead" }, "Each waits for a decision: resume retries the task, skip goes on without it, abort ends the execution."),
    pagedList(await list(), list, draw, "paused executions"),
  );
}
