// The operator's decisions on one execution (resume, skip, abort; approve or reject a task's output
// awaiting feedback), shared by the execution view and the lists of paused executions and of those
// awaiting feedback. Each calls the documented route and says what the API answered.
import { post } from "./api.js";
import { h, field, select, shortId, isTerminal, temporalLink, when } from "./dom.js";
import { announce, fail } from "./notify.js";

const DONE = new Set(["completed", "skipped", "degraded"]);

/** The task an execution is at (paused on, retrying): the first one not done, one with an error first. */
export function currentTask(execution) {
  return execution.tasks.find((t) => !DONE.has(t.status) && t.error) || execution.tasks.find((t) => !DONE.has(t.status));
}

/** A JSON object from a textarea ("" is {}); on a bad value, says why and returns null. */
export function readObject(textarea, what) {
  const text = textarea.value.trim();
  textarea.removeAttribute("aria-invalid");
  if (!text) return {};
  try {
    const value = JSON.parse(text);
    if (value && typeof value === "object" && !Array.isArray(value)) return value;
  } catch {
    // reported below, like a value that parses to something other than an object
  }
  textarea.setAttribute("aria-invalid", "true");
  fail({ code: "INPUT_INVALID", detail: `${what} must be a JSON object, like {"topic": "otters"}`, errors: [] });
  textarea.focus();
  return null;
}

/** Runs an action once at a time: its button is busy until the API answered. */
async function act(button, action) {
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  try {
    await action();
  } catch (error) {
    fail(error);
  } finally {
    button.disabled = false;
    button.removeAttribute("aria-busy");
  }
}

function resumeForm(execution, context, level) {
  const patch = h("textarea", { name: "inputs_patch", rows: "2", spellcheck: "false" });
  const keyEnv = h("input", { name: "api_key_env", autocomplete: "off", spellcheck: "false" });
  const button = h("button", { type: "submit", class: "primary", "data-key": `resume-${execution.id}` }, "Resume");
  const form = h(
    "form",
    { class: "action-form", "aria-label": `Resume execution ${shortId(execution.id)}` },
    h(`h${level}`, {}, "Resume"),
    h("p", { class: "hint" }, "Retry the paused task, after fixing what stopped it."),
    field("Inputs patch (JSON object, optional)", patch),
    field("Key variable on the worker (optional)", keyEnv, "Name of an environment variable, e.g. OPENAI_API_KEY_2"),
    button,
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const inputsPatch = readObject(patch, "The inputs patch");
    if (inputsPatch === null) return;
    const body = { inputs_patch: inputsPatch };
    if (keyEnv.value.trim()) body.llm_override = { api_key_env: keyEnv.value.trim() };
    act(button, async () => {
      const after = await post(`/api/v1/executions/${encodeURIComponent(execution.id)}/resume`, body);
      announce(`Resume accepted: execution ${shortId(after.id)} is ${after.status}.`);
      context.reload();
    });
  });
  return form;
}

function skipForm(execution, context, level) {
  const open = execution.tasks.filter((t) => !DONE.has(t.status));
  const stuck = currentTask(execution);
  const task = select("task", open.map((t) => [t.name, t.name]), stuck && stuck.name);
  const output = h("textarea", { name: "output", rows: "2" });
  const button = h("button", { type: "submit", "data-key": `skip-${execution.id}` }, "Skip task");
  const form = h(
    "form",
    { class: "action-form", "aria-label": `Skip a task of execution ${shortId(execution.id)}` },
    h(`h${level}`, {}, "Skip"),
    h("p", { class: "hint" }, "Mark the task skipped and go on; later tasks get the stand-in output."),
    field("Task", task),
    field("Stand-in output (optional)", output),
    button,
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const body = { task: task.value };
    if (output.value) body.output = output.value;
    act(button, async () => {
      const after = await post(`/api/v1/executions/${encodeURIComponent(execution.id)}/skip`, body);
      announce(`Task ${body.task} skipped: execution ${shortId(after.id)} is ${after.status}.`);
      context.reload();
    });
  });
  return form;
}

// Decisions sent from this tab ("<execution>:<task>:<revision>"): until the execution moves on,
// its views say so instead of offering the same decision again.
const decided = new Set();

/** Approve or reject (with feedback, required) the output of the task awaiting feedback. */
function feedbackForms(execution, context, level) {
  const task = execution.tasks.find((t) => t.status === "awaiting_feedback");
  if (!task) return null;
  const key = `${execution.id}:${task.name}:${task.revision}`;
  if (decided.has(key)) {
    return h("p", { class: "hint" }, `Your decision on the output of ${task.name} was sent; the execution goes on shortly.`);
  }
  const id = shortId(execution.id);
  const send = (button, approve, feedback) =>
    act(button, async () => {
      const body = { task: task.name, approve, revision: task.revision }; // refused if revised since
      if (feedback) body.feedback = feedback;
      await post(`/api/v1/executions/${encodeURIComponent(execution.id)}/feedback`, body);
      decided.add(key);
      announce(
        approve
          ? `Output of task ${task.name} approved: execution ${id} goes on.`
          : `Output of task ${task.name} rejected: it runs again with your feedback (revision ${task.revision + 1}).`,
      );
      context.reload();
    });

  const approveButton = h("button", { type: "submit", class: "primary", "data-key": `approve-${execution.id}` }, "Approve");
  const approve = h(
    "form",
    { class: "action-form", "aria-label": `Approve the output of task ${task.name} of execution ${id}` },
    h(`h${level}`, {}, "Approve"),
    h("p", { class: "hint" }, `The output of ${task.name} stands as it is; the crew goes on.`),
    approveButton,
  );
  approve.addEventListener("submit", (event) => {
    event.preventDefault();
    send(approveButton, true);
  });

  const feedback = h("textarea", { name: "feedback", rows: "3", maxlength: "20000", "aria-required": "true" });
  const rejectButton = h("button", { type: "submit", "data-key": `reject-${execution.id}` }, "Reject");
  const reject = h(
    "form",
    { class: "action-form", "aria-label": `Reject the output of task ${task.name} of execution ${id}` },
    h(`h${level}`, {}, "Reject"),
    field("Feedback (required)", feedback, `What to change: ${task.name} runs again with its output and this feedback.`),
    rejectButton,
  );
  reject.addEventListener("submit", (event) => {
    event.preventDefault();
    feedback.removeAttribute("aria-invalid");
    if (!feedback.value.trim()) {
      feedback.setAttribute("aria-invalid", "true");
      fail({ code: "FEEDBACK_REQUIRED", detail: "a rejection needs feedback: say what to change", errors: [] });
      feedback.focus();
      return;
    }
    send(rejectButton, false, feedback.value.trim());
  });
  return h("div", { class: "action-grid" }, approve, reject);
}

function abortButton(execution, context) {
  const button = h("button", { type: "button", class: "danger", "data-key": `abort-${execution.id}` }, "Abort execution");
  button.addEventListener("click", () => {
    if (!window.confirm(`Abort execution ${shortId(execution.id)}? It ends cancelled, with a dead letter.`)) return;
    act(button, async () => {
      await post(`/api/v1/executions/${encodeURIComponent(execution.id)}/cancel`);
      announce(`Abort requested for execution ${shortId(execution.id)}.`);
      context.reload();
    });
  });
  return button;
}

/** The decisions open to an operator for this execution's status (null when there are none), under
 * a heading of ``level`` (2 on the execution's own view, 3 inside a list of executions). */
export function executionActions(execution, context, level = 2) {
  if (isTerminal(execution.status)) return null;
  const paused = execution.status === "paused";
  const awaiting = execution.status === "awaiting_feedback";
  return h(
    "section",
    { class: "actions", "aria-labelledby": `actions-${execution.id}` },
    h(
      `h${level}`,
      { id: `actions-${execution.id}`, class: paused || awaiting ? null : "visually-hidden" },
      paused || awaiting ? "Decide" : "Actions",
    ),
    paused
      ? h("div", { class: "action-grid" }, resumeForm(execution, context, level + 1), skipForm(execution, context, level + 1))
      : null,
    awaiting ? feedbackForms(execution, context, level + 1) : null,
    h("div", { class: "action-row" }, abortButton(execution, context)),
  );
}

/** One execution of a list of those waiting on someone (paused, awaiting feedback): its links, why
 * it waits (``body``), and the decisions. ``prefix`` keeps the heading ids of the lists apart. */
export function waitingCard(e, context, prefix, body) {
  return h(
    "article",
    { class: "card", "aria-labelledby": `${prefix}-${e.id}` },
    h("h2", { id: `${prefix}-${e.id}` }, `Execution ${shortId(e.id)} · ${e.crew_name}`),
    h(
      "p",
      { class: "card-links" },
      h("a", { href: `#/executions/${encodeURIComponent(e.id)}` }, "Open the execution"),
      " · ",
      temporalLink(e),
      " · created ",
      when(e.created_at),
    ),
    body,
    executionActions(e, context, 3),
  );
}
