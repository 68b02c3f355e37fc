// Building markup from data without innerHTML: every value lands in the page as text.

/** h("a", {href: "#/x", class: "c"}, "text", child, [more]) → an element. Attributes that are
 * null, undefined or false are left out; "on<event>" attributes become listeners. */
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      element.addEventListener(name.slice(2), value);
    } else {
      element.setAttribute(name, value === true ? "" : String(value));
    }
  }
  add(element, ...children);
  return element;
}

/** Appends children to ``element``: nodes, text, arrays of them; null, undefined and false are
 * left out (a part of a view that does not apply). */
export function add(element, ...children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) add(element, ...child);
    else element.append(child instanceof Node ? child : String(child));
  }
  return element;
}

const TERMINAL = new Set(["completed", "degraded", "failed", "cancelled"]);

export function isTerminal(status) {
  return TERMINAL.has(status);
}

/** A status as text with a colour: the word carries the meaning, the colour only helps. */
export function badge(status) {
  return h("span", { class: `badge badge-${status}` }, status);
}

/** Resolves after ``ms``; rejects (AbortError) once ``signal`` aborts: a view's refresh loop ends
 * when the operator leaves the view. */
export function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      reject(new DOMException("view left", "AbortError"));
    });
  });
}

export function shortId(id) {
  return id ? id.slice(0, 8) : "";
}

export function when(iso) {
  if (!iso) return "—";
  const at = new Date(iso);
  return h("time", { datetime: iso, title: iso }, at.toLocaleString(undefined, { dateStyle: "short", timeStyle: "medium" }));
}

export function executionLink(id) {
  return h("a", { href: `#/executions/${encodeURIComponent(id)}`, class: "mono" }, shortId(id));
}

export function temporalLink(execution) {
  return h(
    "a",
    {
      href: execution.temporal_ui_url,
      target: "_blank",
      rel: "noopener noreferrer",
      "aria-label": `Execution ${shortId(execution.id)} in the Temporal Web UI (opens a new tab)`,
    },
    "Temporal Web UI",
  );
}

export function json(value) {
  return h("pre", { class: "json" }, JSON.stringify(value, null, 2));
}

/** A table that never widens the page: it scrolls sideways in its own region (focusable and
 * labelled, so keyboards scroll it too), and on a phone each row stacks into label/value lines
 * (console.css; the explicit roles keep it a table for screen readers when CSS stacks it).
 * rows: arrays of cells (text or nodes); the first cell is the row's header. */
export function table(caption, headers, rows, empty = "Nothing here.") {
  if (!rows.length) return h("p", { class: "empty" }, `${caption}: ${empty}`);
  const head = h("tr", { role: "row" }, headers.map((label) => h("th", { scope: "col", role: "columnheader" }, label)));
  const body = rows.map((cells) =>
    h(
      "tr",
      { role: "row" },
      // The value in one element: stacked, the label and the value are the two columns of a grid.
      cells.map((cell, i) =>
        i === 0
          ? h("th", { scope: "row", role: "rowheader", "data-label": headers[i] }, h("span", {}, cell))
          : h("td", { role: "cell", "data-label": headers[i] }, h("span", {}, cell)),
      ),
    ),
  );
  return h(
    "div",
    { class: "table-scroll", role: "region", "aria-label": caption, tabindex: "0" },
    h(
      "table",
      { role: "table" },
      h("caption", {}, caption),
      h("thead", { role: "rowgroup" }, head),
      h("tbody", { role: "rowgroup" }, body),
    ),
  );
}

/** A labelled form control: the label is always there (never a placeholder standing in for it). */
export function field(label, control, hint) {
  const id = control.id || `f-${Math.random().toString(36).slice(2, 10)}`;
  control.id = id;
  const hintNode = hint ? h("span", { class: "hint", id: `${id}-hint` }, hint) : null;
  if (hintNode) control.setAttribute("aria-describedby", hintNode.id);
  return h("div", { class: "field" }, h("label", { for: id }, label), control, hintNode);
}

export function select(name, options, selected) {
  return h(
    "select",
    { name },
    options.map(([value, label]) => h("option", { value, selected: value === (selected || "") }, label)),
  );
}

/** The page's heading: focused after each navigation so that screen readers start there. */
export function heading(text, ...extra) {
  return h("h1", { tabindex: "-1" }, text, ...extra);
}
