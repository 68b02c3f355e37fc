"""The demo: one execution per error-handling mechanism, side by side, on the example research crew
(examples/research_crew, four tasks, three agents), each with its Web UI link and the command that
steers it.

| scenario | what the simulator does | designed end |
|---|---|---|
| rate limits | 429 twice (Retry-After 1 s) to the researcher, one 503 to the analyst | completed, research in 3 attempts |
| paused on 401 | the analyst's key is refused once | paused; the printed `temporal workflow signal … resume` resumes it; completed |
| dead-lettered | the writer's answer is refused by the content policy once | failed with a dead letter; the printed replay `curl` starts a new execution that reuses research and analyse; completed |
| degraded | the analyst (an optional task here) is refused by the content policy | degraded, analyse listed as a gap |
| circuit breaker | the researcher's provider answers 503 until its breaker opens | the breaker opens (an alert says so), the task parks for the cooldown, a probe closes it; completed |
| python crew + tool | the Python project examples/research_desk: its search tool answers 429 (Retry-After 1 s) once | completed; the tool called twice, the summary a structured output |
| human review | the same project with its summary under human review | awaiting feedback; the printed `curl` approves it; completed |

Every scenario talks to its own simulator path (``/agents/<scenario>-<agent>/v1``), so the faults
of one never touch another. Exit status 0 only if every scenario ended as designed, so
``make demo`` doubles as a smoke test of the whole stack.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from backend.crewai_project import import_project
from backend.settings import Settings, with_crews

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "research_crew"
# The Python project the stack's workers carry for the demo (crewrun up --demo, make demo).
PYTHON_EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "research_desk" / "src"
DEMO_CREWS = {
    "research-desk": "research_desk.crew:ResearchDesk",
    "research-desk-managed": "research_desk.crew:managed_crew",
    "research-desk-reviewed": "research_desk.crew:reviewed_crew",
}


def with_demo_crews(settings: Settings) -> tuple[Settings, dict[str, str]]:
    """The stack's settings with the example Python project on its workers, and the environment
    the project's own code reads (as a `crewai create crew` project does): its LLM and its search
    service, both the simulator in the demo."""
    if not PYTHON_EXAMPLE.is_dir():  # an installed crewrun without the repository's examples
        return settings, {}
    simulator_url = f"http://127.0.0.1:{settings.simulator_port}"
    environment = {
        "MODEL": "gpt-4o-mini",
        "OPENAI_BASE_URL": f"{simulator_url}/v1",
        "OPENAI_API_KEY": "sk-demo-not-a-real-key",
        "SEARCH_API_URL": simulator_url,
    }
    crews = [f"{name}={ref}" for name, ref in DEMO_CREWS.items()]
    return with_crews(settings, crews, [PYTHON_EXAMPLE]), environment


TERMINAL = {"completed", "degraded", "failed", "cancelled"}
# Fast retries for the demo crews: the waits worth showing are Retry-After and the breaker's.
QUICK_RETRY = {
    c: {"initial_interval_s": 0.2, "maximum_interval_s": 1.0} for c in ("network", "external_service")
}


@dataclass
class Scenario:
    label: str
    key: str  # the simulator path prefix of its agents
    faults: list[dict[str, Any]] = field(default_factory=list)
    optional: tuple[str, ...] = ()
    service: str | None = None
    crew_name: str | None = None  # a Python crew the workers carry, instead of a JSON spec
    execution: dict[str, Any] = field(default_factory=dict)
    outcome: str = ""  # what happened, for the table
    command: str = ""  # what steered it
    ok: bool = False
    seconds: float = 0.0


def demo_spec(simulator_url: str, name: str, scenario: Scenario) -> dict[str, Any]:
    spec, _ = import_project(EXAMPLE, name=name, llm={"model": "gpt-4o-mini", "timeout_s": 10})
    body = spec.model_dump(mode="json")
    for agent in body["agents"]:
        agent["llm"]["base_url"] = f"{simulator_url}/agents/{scenario.key}-{agent['name']}/v1"
        agent["llm"]["service"] = scenario.service or "simulator"
    for task in body["tasks"]:
        task["critical"] = task["name"] not in scenario.optional
    body["retry"] = QUICK_RETRY
    return body


def scenarios(run_id: str, breaker_failures: int = 5) -> list[Scenario]:
    return [
        Scenario(
            "rate limits",
            f"rl{run_id}",
            faults=[
                {"kind": "rate_limit", "agent": f"rl{run_id}-researcher", "count": 2, "retry_after_s": 1},
                {"kind": "server_error", "agent": f"rl{run_id}-analyst", "count": 1, "status": 503},
            ],
        ),
        Scenario(
            "paused on 401",
            f"pa{run_id}",
            faults=[{"kind": "auth", "agent": f"pa{run_id}-analyst", "count": 1}],
        ),
        Scenario(
            "dead-lettered",
            f"dl{run_id}",
            faults=[{"kind": "content_policy", "agent": f"dl{run_id}-writer", "count": 1}],
        ),
        Scenario(
            "degraded",
            f"dg{run_id}",
            optional=("analyse",),
            faults=[{"kind": "content_policy", "agent": f"dg{run_id}-analyst", "count": 1}],
        ),
        # As many 503s in a row as open a breaker (CREWRUN_BREAKER_CONSECUTIVE_FAILURES, 5 by default).
        Scenario(
            "circuit breaker",
            f"cb{run_id}",
            service=f"demo-provider-{run_id}",
            faults=[{"kind": "server_error", "agent": f"cb{run_id}-researcher", "count": breaker_failures}],
        ),
        Scenario(
            "python crew + tool",
            f"py{run_id}",
            crew_name="research-desk",
            faults=[
                # This execution's calls only (its topic is in the query): the other scenario of
                # the project uses the same tool at the same time.
                {
                    "kind": "rate_limit",
                    "tool": "web_search",
                    "args_contain": f"py{run_id}",
                    "count": 1,
                    "retry_after_s": 1,
                },
            ],
        ),
        Scenario("human review", f"hr{run_id}", crew_name="research-desk-reviewed"),
    ]


class Demo:
    def __init__(
        self, api_url: str, simulator_url: str, temporal_cli: list[str], echo: Callable[[str], Any]
    ) -> None:
        self.api = httpx.Client(base_url=api_url, timeout=30)
        self.sim = httpx.Client(base_url=simulator_url, timeout=30)
        self.api_url, self.simulator_url = api_url, simulator_url
        self.temporal_cli = temporal_cli
        self.echo = echo

    def get(self, execution_id: str) -> dict[str, Any]:
        body: dict[str, Any] = self.api.get(f"/api/v1/executions/{execution_id}").json()
        return body

    def wait(self, execution_id: str, statuses: set[str], timeout_s: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            body = self.get(execution_id)
            if body["status"] in statuses or time.monotonic() > deadline:
                return body
            time.sleep(0.2)

    def wait_for_crews(self, names: set[str], timeout_s: float) -> None:
        """Python crews are listed once a worker that carries them has started."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            listed = {c["name"] for c in self.api.get("/api/v1/crews", params={"limit": 500}).json()["items"]}
            if names <= listed:
                return
            time.sleep(0.2)

    def start(self, scenario: Scenario, name: str) -> None:
        if scenario.crew_name is not None:
            crew = {"crew_name": scenario.crew_name}
        else:
            created = self.api.post("/api/v1/crews", json=demo_spec(self.simulator_url, name, scenario))
            created.raise_for_status()
            crew = {"crew_id": created.json()["id"]}
        if scenario.faults:
            self.sim.post("/_sim/faults", json={"rules": scenario.faults}).raise_for_status()
        started = self.api.post(
            "/api/v1/executions",
            json={**crew, "inputs": {"topic": f"tidal energy {scenario.key}"}},
            headers={"Idempotency-Key": name},
        )
        started.raise_for_status()
        scenario.execution = started.json()

    def rate_limits(self, s: Scenario, timeout_s: float) -> None:
        done = self.wait(s.execution["id"], TERMINAL, timeout_s)
        attempts = [t["attempts"] for t in done["tasks"]]
        s.execution, s.ok = done, done["status"] == "completed" and attempts[:2] == [3, 2]
        s.outcome = f"{done['status']}, attempts {'/'.join(map(str, attempts))}"
        s.command = f"curl -s {self.api_url}/api/v1/executions/{done['id']}/errors"

    def paused(self, s: Scenario, timeout_s: float) -> None:
        paused = self.wait(s.execution["id"], {"paused"} | TERMINAL, timeout_s)
        if paused["status"] != "paused":
            s.execution, s.outcome = paused, f"{paused['status']}, never paused"
            return
        signal = [
            *self.temporal_cli,
            "workflow",
            "signal",
            "--workflow-id",
            paused["workflow_id"],
            "--name",
            "resume",
            "--input",
            "{}",
        ]
        s.command = shlex.join(signal)
        subprocess.run(signal, check=True, capture_output=True, timeout=30)  # the printed command, as is
        done = self.wait(s.execution["id"], TERMINAL, timeout_s)
        s.execution, s.ok = done, done["status"] == "completed"
        code = next(
            (t["error"]["code"] for t in paused["tasks"] if t["status"] != "completed" and t["error"]), "?"
        )
        s.outcome = f"paused on {code}, resumed with the printed signal, {done['status']}"

    def dead_lettered(self, s: Scenario, timeout_s: float) -> None:
        failed = self.wait(s.execution["id"], TERMINAL, timeout_s)
        letters = self.api.get("/api/v1/dead-letters", params={"status": "open", "limit": 500}).json()[
            "items"
        ]
        letter = next((d for d in letters if d["execution_id"] == failed["id"]), None)
        if failed["status"] != "failed" or letter is None:
            s.execution, s.outcome = failed, f"{failed['status']}, no dead letter"
            return
        replay = f"{self.api_url}/api/v1/dead-letters/{letter['id']}/replay"
        s.command = f"curl -s -X POST {replay} -H 'content-type: application/json' -d '{{}}'"
        replayed = self.api.post(
            f"/api/v1/dead-letters/{letter['id']}/replay", json={}
        )  # the printed request
        replayed.raise_for_status()
        done = self.wait(replayed.json()["id"], TERMINAL, timeout_s)
        reused = [t["name"] for t in letter["completed_tasks"]]
        s.execution, s.ok = done, done["status"] == "completed" and reused == ["research", "analyse"]
        s.outcome = f"failed ({failed['error']['code']}), dead letter replayed: {done['status']}, reused {'+'.join(reused)}"

    def degraded(self, s: Scenario, timeout_s: float) -> None:
        done = self.wait(s.execution["id"], TERMINAL, timeout_s)
        s.execution, s.ok = done, done["status"] == "degraded" and done["gaps"] == ["analyse"]
        s.outcome = f"{done['status']}, gaps {','.join(done['gaps']) or 'none'}"
        s.command = f"curl -s {self.api_url}/api/v1/executions/{done['id']}"

    def circuit_breaker(self, s: Scenario, timeout_s: float) -> None:
        done = self.wait(s.execution["id"], TERMINAL, timeout_s)
        alerts = self.api.get("/api/v1/alerts", params={"limit": 500}).json()["items"]
        opened = any(a["rule"] == "circuit-opened" and str(s.service) in a["title"] for a in alerts)
        breakers = {b["service"]: b["state"] for b in self.api.get("/api/v1/circuit-breakers").json()}
        s.execution = done
        s.ok = done["status"] == "completed" and opened and breakers.get(str(s.service)) == "closed"
        s.outcome = f"breaker {'opened, then ' if opened else 'never opened, '}{breakers.get(str(s.service))}; {done['status']}"
        s.command = f"curl -s {self.api_url}/api/v1/circuit-breakers"

    def python_crew(self, s: Scenario, timeout_s: float) -> None:
        done = self.wait(s.execution["id"], TERMINAL, timeout_s)
        topic = s.execution["inputs"]["topic"]
        tool_calls = [
            c
            for c in self.sim.get("/_sim/requests", params={"tool": "web_search"}).json()["calls"]
            if topic in c["args"]
        ]
        summary = done["tasks"][-1]["json_dict"] if done["tasks"] else None
        s.execution = done
        s.ok = (
            done["status"] == "completed"
            and [c["status"] for c in tool_calls] == [429, 200]
            and bool(summary)
        )
        s.outcome = (
            f"{done['status']}, tool calls {'/'.join(str(c['status']) for c in tool_calls)}, "
            f"summary {'structured' if summary else 'missing'}"
        )
        s.command = f"curl -s {self.api_url}/api/v1/executions/{done['id']}"

    def human_review(self, s: Scenario, timeout_s: float) -> None:
        waiting = self.wait(s.execution["id"], {"awaiting_feedback"} | TERMINAL, timeout_s)
        if waiting["status"] != "awaiting_feedback":
            s.execution, s.outcome = waiting, f"{waiting['status']}, never awaited feedback"
            return
        task = next(t["name"] for t in waiting["tasks"] if t["status"] == "awaiting_feedback")
        body = json.dumps({"task": task, "approve": True})
        url = f"{self.api_url}/api/v1/executions/{waiting['id']}/feedback"
        s.command = f"curl -s -X POST {url} -H 'content-type: application/json' -d '{body}'"
        approved = self.api.post(f"/api/v1/executions/{waiting['id']}/feedback", json=json.loads(body))
        approved.raise_for_status()  # the printed request
        done = self.wait(s.execution["id"], TERMINAL, timeout_s)
        s.execution, s.ok = done, done["status"] == "completed"
        s.outcome = f"awaited feedback on {task}, approved with the printed curl, {done['status']}"


def run_demo(
    api_url: str,
    simulator_url: str,
    *,
    temporal_address: str = "127.0.0.1:7233",
    namespace: str = "default",
    breaker_failures: int = 5,
    timeout_s: float = 120,
    echo: Callable[[str], Any] = print,
) -> bool:
    from backend.stack import temporal_binary

    run_id = uuid.uuid4().hex[:6]
    cli = [temporal_binary(), "--address", temporal_address, "--namespace", namespace]
    demo = Demo(api_url, simulator_url, cli, echo)
    plan = scenarios(run_id, breaker_failures)
    handlers = [
        demo.rate_limits,
        demo.paused,
        demo.dead_lettered,
        demo.degraded,
        demo.circuit_breaker,
        demo.python_crew,
        demo.human_review,
    ]
    t0 = time.monotonic()
    demo.wait_for_crews({s.crew_name for s in plan if s.crew_name}, timeout_s)
    for scenario in plan:
        demo.start(scenario, f"demo-{scenario.key}")
    echo(f"started {len(plan)} executions of the example crew, one per mechanism")
    for scenario, handle in zip(plan, handlers, strict=True):
        try:
            handle(scenario, timeout_s)
        except (
            httpx.HTTPError,
            subprocess.SubprocessError,
            KeyError,
            TypeError,
            json.JSONDecodeError,
        ) as exc:
            scenario.outcome = f"demo step failed: {type(exc).__name__}: {exc}"[:200]
        scenario.seconds = time.monotonic() - t0

    echo("")
    echo(f"{'scenario':18} {'as designed':11} {'secs':>5}  what happened")
    for s in plan:
        echo(f"{s.label:18} {'yes' if s.ok else 'NO':11} {s.seconds:5.1f}  {s.outcome}")
        if s.execution:
            echo(f"{'':36}Web UI: {s.execution.get('temporal_ui_url', '')}")
        if s.command:
            echo(f"{'':36}$ {s.command}")
    ok = all(s.ok for s in plan)
    echo("")
    echo("every scenario ended as designed" if ok else "NOT every scenario ended as designed")
    return ok
