// Executions awaiting a person (GET /api/v1/executions?status=awaiting_feedback): the output of the
// task under review, the decisions taken on it so far, and approve or reject (with feedback) right
// there. The view follows the list, so a rejected task's next output shows up once it is written.
import { get } from "../api.js";
import { waitingCard } from "../actions.js";
import { h, add, heading, sleep, when } from "../dom.js";
import { feedbackHistory, outputBody } from "../outputs.js";
import { pagedList } from "../paging.js";

const WAITING = "awaiting_feedback";

function review(e, task) {
  const title = `review-${e.id}`;
  return h(
    "section",
    { class: "review", "aria-labelledby": title },
    h("h3", { id: title }, `Task ${task.name} awaits review${task.revision ? ` · revision ${task.revision}` : ""}`),
    h(
      "dl",
      { class: "facts" },
      [
        ["Agent", task.agent],
        ["Model", task.model || "—"],
        ["Written", when(task.finished_at)],
      ].map(([term, value]) => [h("dt", {}, term), h("dd", {}, value)]),
    ),
    outputBody(task),
    feedbackHistory(task),
  );
}

function card(e, context) {
  const task = e.tasks.find((t) => t.status === WAITING);
  return waitingCard(e, context, "waiting", task ? review(e, task) : null);
}

// What the list is, as far as this view draws it: which executions, and where their tasks are.
const signature = (items) => items.map((e) => `${e.id}:${e.status}:${e.tasks.map((t) => `${t.status}/${t.revision}`)}`).join("|");

/** Draws the view again when the list changed (an execution went on, another one waits, a rejected
 * task's next output is written), unless the operator is typing feedback. */
async function follow(drawn, view, { signal, reload }) {
  for (let wait = 500; ; wait = Math.min(wait * 2, 4000)) {
    await sleep(wait, signal);
    const now = await get("/api/v1/executions", { status: WAITING, limit: 50 }, signal);
    const typing = [...view.querySelectorAll("textarea")].some((t) => t.value.trim());
    if (signature(now.items) !== drawn && !typing) {
      reload();
      return;
    }
  }
}

export async function render(view, context) {
  const { signal } = context;
  // The list leaves outputs out: each execution is asked for whole (its tasks' outputs and decisions).
  const list = async (cursor) => {
    const page = await get("/api/v1/executions", { status: WAITING, limit: 50, cursor }, signal);
    const items = await Promise.all(page.items.map((e) => get(`/api/v1/executions/${encodeURIComponent(e.id)}`, {}, signal)));
    return { items, next_cursor: page.next_cursor };
  };
  const first = await list();
  const draw = (items) =>
    items.length
      ? h("div", { class: "cards" }, items.map((e) => card(e, context)))
      : h("p", { class: "empty" }, "No execution awaits feedback.");
  add(
    view,
    heading("Awaiting feedback"),
    h(
      "p",
      { class: "lead" },
      "A task under human review waits here with its output: approve it and the crew goes on, or reject it with feedback and the task runs again with it.",
    ),
    pagedList(first, list, draw, "executions awaiting feedback"),
  );
  follow(signature(first.items), view, context).catch(() => {}); // a left view or a failed poll ends following
}
