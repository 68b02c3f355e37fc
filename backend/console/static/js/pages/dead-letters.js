// Dead letters (GET /api/v1/dead-letters): executions that failed for good or were cancelled, with
// their checkpoint. Replay starts a new execution that runs only the tasks that had not completed;
// discard closes the letter.
import { get, post } from "../api.js";
import { readObject } from "../actions.js";
import { errorCard } from "../cards.js";
import { h, add, badge, executionLink, field, heading, json, select, shortId, when } from "../dom.js";
import { announce, announceNext, fail } from "../notify.js";
import { pagedList } from "../paging.js";

const STATUSES = [["open", "open"], ["replayed", "replayed"], ["discarded", "discarded"], ["", "any status"]];

function statusFilter(current) {
  const status = select("status", STATUSES, current);
  const form = h(
    "form",
    { class: "filters", role: "search", "aria-label": "Filter dead letters" },
    field("Status", status),
    h("div", { class: "filter-buttons" }, h("button", { type: "submit" }, "Show")),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    location.hash = `#/dead-letters?status=${encodeURIComponent(status.value || "any")}`;
  });
  return form;
}

function replayForm(letter) {
  const patch = h("textarea", { name: "inputs_patch", rows: "2", spellcheck: "false" });
  const button = h("button", { type: "submit", class: "primary", "data-key": `replay-${letter.id}` }, "Replay");
  const form = h(
    "form",
    { class: "action-form", "aria-label": `Replay dead letter ${shortId(letter.id)}` },
    field("Inputs patch (JSON object, optional)", patch, "Merged into the execution's inputs for the new run."),
    button,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const inputsPatch = readObject(patch, "The inputs patch");
    if (inputsPatch === null) return;
    button.disabled = true;
    try {
      const started = await post(`/api/v1/dead-letters/${encodeURIComponent(letter.id)}/replay`, { inputs_patch: inputsPatch });
      announceNext(`Dead letter ${shortId(letter.id)} replayed: new execution ${shortId(started.id)} is ${started.status}.`);
      location.hash = `#/executions/${encodeURIComponent(started.id)}`;
    } catch (error) {
      fail(error);
      button.disabled = false;
    }
  });
  return form;
}

function discardButton(letter, reload) {
  const button = h("button", { type: "button", class: "danger", "data-key": `discard-${letter.id}` }, "Discard");
  button.addEventListener("click", async () => {
    if (!window.confirm(`Discard dead letter ${shortId(letter.id)}? It can no longer be replayed.`)) return;
    button.disabled = true;
    try {
      await post(`/api/v1/dead-letters/${encodeURIComponent(letter.id)}/discard`);
      announce(`Dead letter ${shortId(letter.id)} discarded.`);
      reload();
    } catch (error) {
      fail(error);
      button.disabled = false;
    }
  });
  return button;
}

function card(letter, reload) {
  const reused = letter.completed_tasks.map((t) => t.name).join(", ") || "none";
  const facts = [
    ["Status", badge(letter.status)],
    ["Execution", executionLink(letter.execution_id)],
    ["Reason", letter.reason],
    ["Created", when(letter.created_at)],
    ["Completed tasks (reused by a replay)", reused],
    ["Replayed as", letter.replayed_execution_id ? executionLink(letter.replayed_execution_id) : null],
  ].filter(([, value]) => value);
  return h(
    "article",
    { class: "card", "aria-labelledby": `letter-${letter.id}` },
    h("h2", { id: `letter-${letter.id}` }, `Dead letter ${shortId(letter.id)}`),
    h("dl", { class: "facts" }, facts.map(([term, value]) => [h("dt", {}, term), h("dd", {}, value)])),
    letter.error ? errorCard(letter.error, "Its error", 3, true) : null,
    h("details", {}, h("summary", {}, "Inputs"), json(letter.inputs)),
    letter.status === "open"
      ? h("div", { class: "letter-actions" }, replayForm(letter), h("div", { class: "action-row" }, discardButton(letter, reload)))
      : null,
  );
}

export async function render(view, { query, signal, reload }) {
  const chosen = query.get("status") || "open";
  const status = chosen === "any" ? null : chosen;
  const list = (cursor) => get("/api/v1/dead-letters", { status, limit: 50, cursor }, signal);
  const draw = (items) =>
    items.length ? h("div", { class: "cards" }, items.map((d) => card(d, reload))) : h("p", { class: "empty" }, status ? `No ${status} dead letter.` : "No dead letter.");
  add(view, heading("Dead letters"), statusFilter(status || ""), pagedList(await list(), list, draw, "dead letters"));
}
