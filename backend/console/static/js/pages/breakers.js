// Circuit breakers, one per external service (GET /api/v1/circuit-breakers); an open or half-open
// one can be closed by hand (POST .../{service}/reset).
import { get, post } from "../api.js";
import { h, add, badge, heading, table, when } from "../dom.js";
import { announce, fail } from "../notify.js";

function resetButton(breaker, reload) {
  if (breaker.state === "closed") return "—";
  const button = h(
    "button",
    { type: "button", "data-key": `reset-${breaker.service}`, "aria-label": `Reset the breaker of ${breaker.service}` },
    "Reset",
  );
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      const after = await post(`/api/v1/circuit-breakers/${encodeURIComponent(breaker.service)}/reset`);
      announce(`Circuit breaker of ${after.service} reset: ${after.state}.`);
      reload();
    } catch (error) {
      fail(error);
      button.disabled = false;
    }
  });
  return button;
}

export async function render(view, { signal, reload }) {
  const breakers = await get("/api/v1/circuit-breakers", {}, signal);
  const rows = breakers.map((b) => [
    b.service,
    badge(b.state),
    `${Math.round(b.failure_rate * 100)} %`,
    b.window_calls,
    b.consecutive_failures,
    when(b.opened_at),
    when(b.next_probe_at),
    resetButton(b, reload),
  ]);
  const headers = ["Service", "State", "Failure rate", "Calls in window", "Failures in a row", "Opened", "Next probe", "Action"];
  add(
    view,
    heading("Circuit breakers"),
    h("p", { class: "lead" }, "While a breaker is open, tasks calling its service wait instead of calling it; a probe call closes it again."),
    table("Circuit breakers by service", headers, rows, "no service has been called yet."),
  );
}
