// An error record (docs/api.md's ErrorRecord) as operators read it: what failed, how, what to do.
import { errorCode } from "./catalog.js";
import { h } from "./dom.js";

function entry(term, value) {
  return value === null || value === undefined || value === "" ? null : [h("dt", {}, term), h("dd", {}, value)];
}

/** A card with an error record's code, category, severity, where it happened and its message, under
 * a heading of ``level``; ``brief`` (in lists) leaves out agent, service, HTTP status and attempt.
 * The remedy the API lists for the code is added once the catalogue is in. */
export function errorCard(record, title, level = 2, brief = false) {
  const attempt = record.category_attempt && record.max_attempts ? `${record.category_attempt} of ${record.max_attempts}` : null;
  const facts = h(
    "dl",
    { class: "facts" },
    entry("Code", h("code", { class: "error-code" }, record.code)),
    entry("Category", h("span", { class: "error-category" }, record.category)),
    entry("Severity", record.severity),
    entry("Task", record.task),
    brief ? null : entry("Agent", record.agent),
    brief ? null : entry("Service", record.service),
    brief ? null : entry("HTTP status", record.status_code),
    brief ? null : entry("Attempt (of its category's budget)", attempt),
    entry("Message", h("span", { class: "error-message" }, record.message)),
  );
  errorCode(record.code)
    .then((known) => known && facts.append(...entry("What to do", known.remedy)))
    .catch(() => {}); // without the catalogue the card still says what happened
  return h(
    "section",
    { class: `error-card severity-${record.severity || "unknown"}`, "aria-label": title },
    h(`h${level}`, {}, title),
    facts,
  );
}
