// What an action did, said where screen readers hear it (aria-live) and where eyes see it.
import { h } from "./dom.js";

const status = () => document.getElementById("notice-status");
const alert = () => document.getElementById("notice-alert");

export function announce(message) {
  alert().textContent = "";
  status().textContent = message;
}

function describe(error) {
  if (!error.code) return `Unexpected error: ${error.message}`;
  const fields = error.errors.map((e) => `${(e.loc || []).join(".")}: ${e.msg}`).join("; ");
  return `${error.code}: ${error.detail}${fields ? ` (${fields})` : ""}`;
}

/** A failed action: its problem code and detail, announced at once. */
export function fail(error) {
  status().textContent = "";
  alert().textContent = describe(error);
}

let carried = null;

/** Says ``message`` once the next view is shown (an action that leads to another view). */
export function announceNext(message) {
  carried = message;
}

/** A new view starts with no notice, or with the one an action carried over to it. */
export function clearNotices() {
  alert().textContent = "";
  status().textContent = carried || "";
  carried = null;
}

/** A view that could not load: the problem in its place, never a blank page. */
export function problemBlock(error) {
  return h(
    "div",
    { class: "problem" },
    h("h2", {}, error.status ? `The API answered ${error.status}` : "The console could not load this view"),
    h("p", {}, h("code", {}, error.code || "ERROR"), " ", error.detail || error.message),
    error.errors && error.errors.length
      ? h("ul", {}, error.errors.map((e) => h("li", {}, `${(e.loc || []).join(".")}: ${e.msg}`)))
      : null,
  );
}
