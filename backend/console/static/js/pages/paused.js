// Executions paused for an operator (GET /api/v1/executions?status=paused): why each one stopped,
// and the decisions (resume, skip, abort) right there.
import { get } from "../api.js";
import { waitingCard, currentTask } from "../actions.js";
import { errorCard } from "../cards.js";
import { h, add, heading } from "../dom.js";
import { pagedList } from "../paging.js";

function card(e, context) {
  const task = currentTask(e);
  const why = task && task.error ? errorCard(task.error, `Why task ${task.name} stopped`, 3, true) : null;
  return waitingCard(e, context, "paused", why);
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
