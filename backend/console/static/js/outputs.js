// What a task produced, as operators read it: its structured output (json_dict) pretty-printed, the
// file it was written to, its text, and the decisions people took on it (human input). Shared by the
// execution view and the list of executions awaiting feedback.
import { h, badge, table, when } from "./dom.js";

/** The task's output: the structured one first (the text is then in a closed "Text" part), or the
 * text; the output file's name when the task wrote one. */
export function outputBody(task) {
  const structured = task.json_dict ? h("pre", { class: "json structured-output" }, JSON.stringify(task.json_dict, null, 2)) : null;
  const text = task.output ? h("pre", { class: "output" }, task.output) : null;
  return [
    structured ? h("p", { class: "hint" }, `Structured output (${task.output_format}):`) : null,
    structured,
    task.output_file
      ? h("p", {}, "Written to the file ", h("code", { class: "output-file" }, task.output_file), " (in the worker's outputs directory of this execution).")
      : null,
    structured && text ? h("details", {}, h("summary", {}, `Text of ${task.name}`), text) : text,
  ];
}

/** Every decision a person took on the task's output (revision, approved or rejected, the feedback
 * and the output it was about), oldest first; null when there is none. */
export function feedbackHistory(task) {
  if (!task.feedback || !task.feedback.length) return null;
  const rows = task.feedback.map((d) => [
    String(d.revision),
    badge(d.approved ? "approved" : "rejected"),
    d.feedback ? h("span", { class: "feedback-text" }, d.feedback) : "—",
    when(d.at),
    d.output ? h("details", {}, h("summary", {}, `Output of revision ${d.revision}`), h("pre", { class: "output" }, d.output)) : "—",
  ]);
  return table(`Decisions on ${task.name}, oldest first`, ["Revision", "Decision", "Feedback", "At", "Output it was about"], rows);
}
