// The console's shell: routes (#/<view>/<id>?<filters>) to one module per view, asks for an API key
// when the API answers 401, and keeps focus and announcements where keyboard and screen-reader
// users expect them.
import { storedKey, storeKey, forgetKey } from "./api.js";
import { h, field, heading } from "./dom.js";
import { announce, clearNotices, problemBlock } from "./notify.js";
import * as executions from "./pages/executions.js";
import * as execution from "./pages/execution.js";
import * as paused from "./pages/paused.js";
import * as feedback from "./pages/feedback.js";
import * as deadLetters from "./pages/dead-letters.js";
import * as errors from "./pages/errors.js";
import * as breakers from "./pages/breakers.js";
import * as alerts from "./pages/alerts.js";

// [pattern of the path after "#/", page module, nav entry]
const ROUTES = [
  [/^executions\/([^/]+)$/, execution, "executions"],
  [/^executions$/, executions, "executions"],
  [/^paused$/, paused, "paused"],
  [/^feedback$/, feedback, "feedback"],
  [/^dead-letters$/, deadLetters, "dead-letters"],
  [/^errors$/, errors, "errors"],
  [/^breakers$/, breakers, "breakers"],
  [/^alerts$/, alerts, "alerts"],
];

const main = document.getElementById("main");
let current = { controller: new AbortController() };

function parse(hash) {
  const [path, search] = hash.replace(/^#\/?/, "").split("?");
  for (const [pattern, page, nav] of ROUTES) {
    const found = pattern.exec(path || "executions");
    if (found) {
      const params = found.slice(1).map(decodeURIComponent);
      return { page, nav, params, query: new URLSearchParams(search || "") };
    }
  }
  return null;
}

/** Starts a new view: the previous one's requests and refresh loops stop (its signal aborts). */
function begin() {
  current.controller.abort();
  current = { controller: new AbortController() };
  return current;
}

function markNav(nav) {
  for (const link of document.querySelectorAll("[data-nav]")) {
    if (link.dataset.nav === nav) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
}

// What identifies a control across two drawings of a view: its data-key, else what it is and says.
function signature(element) {
  return element.dataset.key || `${element.tagName}|${element.getAttribute("href") || ""}|${element.textContent.trim()}`;
}

function focusedInView() {
  const focused = document.activeElement;
  return focused && focused !== main && main.contains(focused) ? signature(focused) : null;
}

/** After a view is drawn again, the control that had focus gets it back; if it is gone, the heading
 * does (never the page's body, where a keyboard user would have to start over). */
function restoreFocus(key) {
  const again = [...main.querySelectorAll("a, button, input, select, textarea, summary")].find((e) => signature(e) === key);
  (again || main.querySelector("h1") || main).focus();
}

/** Renders the view of the current location. ``reload``: the same view again after an action or a
 * change, keeping the announcement and the focus. */
async function show({ reload = false } = {}) {
  const route = parse(location.hash);
  const run = begin();
  const focused = reload ? focusedInView() : null;
  if (!reload) clearNotices();
  sessionHeader();
  checkHealth();
  if (!route) {
    markNav(null);
    main.replaceChildren(heading("Not found"), h("p", {}, "No such view. ", h("a", { href: "#/executions" }, "Executions")));
    main.querySelector("h1").focus();
    return;
  }
  markNav(route.nav);
  const view = h("div", { class: "view" });
  let markShown;
  const context = {
    params: route.params,
    query: route.query,
    signal: run.controller.signal,
    reload: () => show({ reload: true }),
    // Resolves once the view is in the document (what a chart needs to measure itself).
    shown: new Promise((resolve) => (markShown = resolve)),
  };
  try {
    await route.page.render(view, context);
  } catch (error) {
    if (error.name === "AbortError" || run !== current) return;
    if (error.status === 401) return; // the unauthorized listener shows the sign-in form
    view.replaceChildren(heading("Could not load this view"), problemBlock(error));
  }
  if (run !== current) return; // the operator moved on while this view loaded
  main.replaceChildren(view);
  markShown();
  document.title = `${view.querySelector("h1")?.textContent || "crewrun"} · crewrun console`;
  if (!reload) (main.querySelector("h1") || main).focus(); // where a screen reader starts reading
  else if (focused) restoreFocus(focused);
}

function showSignIn(message) {
  begin(); // whatever was loading stops; after signing in the same location is shown again
  markNav(null);
  const input = h("input", { type: "password", name: "key", autocomplete: "off", required: true, spellcheck: "false" });
  const form = h(
    "form",
    { class: "sign-in", "aria-labelledby": "sign-in-title" },
    h("h1", { id: "sign-in-title", tabindex: "-1" }, "Sign in"),
    h("p", { class: "sign-in-reason" }, message),
    field("API key", input, "One of the API's keys (CREWRUN_API_KEYS). It is kept in this tab only, until you sign out or close it."),
    h("button", { type: "submit", class: "primary" }, "Sign in"),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    storeKey(input.value.trim());
    show();
  });
  main.replaceChildren(form);
  document.title = "Sign in · crewrun console";
  sessionHeader();
  input.focus();
}

function sessionHeader() {
  document.getElementById("sign-out").hidden = !storedKey();
}

async function checkHealth() {
  const shown = document.getElementById("health");
  try {
    const response = await fetch(new URL("../health", document.baseURI));
    const body = await response.json();
    const down = ["database", "temporal"].filter((part) => body[part] !== "ok");
    shown.textContent = down.length ? `API degraded: ${down.join(" and ")} down` : "API ok";
    shown.className = down.length ? "health health-bad" : "health health-ok";
  } catch {
    shown.textContent = "API unreachable";
    shown.className = "health health-bad";
  }
}

window.addEventListener("console:unauthorized", (event) => {
  const { error, refused } = event.detail;
  const problem = `${error.code}: ${error.detail}`;
  showSignIn(
    refused ? `The API refused this key (${problem}). Enter a valid key.` : `This crewrun API needs an API key (${problem}).`,
  );
});

document.getElementById("sign-out").addEventListener("click", () => {
  forgetKey();
  showSignIn("Signed out. Enter a key to continue.");
  announce("Signed out.");
});

// The skip link moves focus without touching the location (the fragment is the route here).
document.querySelector(".skip-link").addEventListener("click", (event) => {
  event.preventDefault();
  main.focus();
});

window.addEventListener("hashchange", () => show());
show();
