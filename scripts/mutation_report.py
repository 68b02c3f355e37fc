"""MUTATION.md from the results of the last ``mutmut run`` (``make mutation``).

Reads mutmut's per-file results (``mutants/<module>.py.meta``: the exit code of every mutant's
test run, mapped to a status as ``mutmut results`` maps it) and the reviewed survivors
(``mutation/equivalent.toml``), then writes per error-path module: mutants, killed, timeout,
survived, equivalent, the score, and every survivor with its mutation and its reason.

- A *timeout* counts as detected: the tests never finished with that mutant (pytest-timeout would
  fail them).
- An *equivalent* mutant behaves as the original for every input crewrun can give it; it leaves
  the denominator: score = detected / (mutants - equivalent).
- A survivor reviewed as ``postgresql`` is killed by the PostgreSQL half of a data-layer test (the
  run uses SQLite only): its test is run here against it, on PostgreSQL, and must fail.
- A survivor reviewed as ``accepted`` is a survivor all the same (it counts against the score);
  its reason says why no test kills it.
- Entries reviewed as ``killed`` name a gap a test closed: that test alone is run here against the
  mutant and must fail.

The scores and the survivors come from the run; only the reasons are typed, by whoever read the
mutant (``mutmut show``). Fails (exit 1) when a module scores under ``--min-score``, when a
survivor has no reason, when a named test does not kill its mutant, or when a reviewed entry no
longer matches its mutant (the function changed: the mutant numbered so is another mutation now).
Run from the repository root, after ``mutmut run``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mutmut.mutation.diff_apply import get_diff_for_mutant
from mutmut.stats import status_by_exit_code

ROOT = Path(__file__).resolve().parent.parent
# The modules make mutation scores (pyproject.toml's [tool.mutmut] only_mutate).
MODULES = {
    "backend/exceptions/classifier.py": "classification",
    "backend/exceptions/categories.py": "category traits",
    "backend/exceptions/retry_policy.py": "retry policy",
    "activities/boundary.py": "attempt boundary",
    "activities/llm_boundary.py": "LLM boundary",
    "activities/tool_boundary.py": "tool boundary",
    "backend/breaker.py": "circuit breaker",
    "backend/db/dead_letters.py": "compensation, final record, dead letters",
    "backend/exceptions/redaction.py": "redaction",
}
REVIEWED = ROOT / "mutation" / "equivalent.toml"
KINDS = {"equivalent", "postgresql", "accepted", "killed"}


@dataclass
class Survivor:
    name: str
    status: str  # mutmut's: survived, no tests, suspicious, ...
    mutation: str  # the changed lines: "-old" / "+new"
    kind: str | None = None  # the review's: equivalent, postgresql, accepted
    reason: str | None = None
    verified: bool = False  # a postgresql one: its test failed with it

    @property
    def detected(self) -> bool:
        return self.kind == "postgresql" and self.verified


@dataclass
class ModuleResult:
    path: str
    label: str
    counts: dict[str, int] = field(default_factory=dict)
    survivors: list[Survivor] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def equivalent(self) -> int:
        return sum(1 for s in self.survivors if s.kind == "equivalent")

    @property
    def on_postgresql(self) -> int:
        return sum(1 for s in self.survivors if s.detected)

    @property
    def detected(self) -> int:
        return self.counts.get("killed", 0) + self.counts.get("timeout", 0) + self.on_postgresql

    @property
    def score(self) -> float:
        scored = self.total - self.equivalent
        return self.detected / scored if scored else 1.0


def mutation_of(name: str, path: str) -> str:
    """The lines a mutant changes, as ``mutmut show`` prints them (without the file header)."""
    diff = get_diff_for_mutant(name, path=path).splitlines()
    changed = [line for line in diff[2:] if line[:1] in "+-"]
    return "\n".join(" ".join(line.split()) for line in changed)


def same_mutation(reviewed: str, found: str) -> bool:
    return " ".join(reviewed.split()) == " ".join(found.split())


def load_reviewed(problems: list[str]) -> dict[str, dict[str, str]]:
    data = tomllib.loads(REVIEWED.read_text("utf-8")) if REVIEWED.exists() else {}
    reviewed = {name: dict(entry) for name, entry in data.items()}
    for name, entry in reviewed.items():
        kind = entry.get("kind")
        if kind not in KINDS:
            problems.append(f"{name}: kind {kind!r} is none of {sorted(KINDS)}")
        if kind in ("postgresql", "killed") and not entry.get("killed_by"):
            problems.append(f"{name}: a {kind} entry names the test that kills it (killed_by)")
        if kind != "killed" and not entry.get("reason"):
            problems.append(f"{name}: no reason")
    return reviewed


def mutmut_config() -> dict[str, Any]:
    return dict(tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["tool"]["mutmut"])


def inputs_digest() -> str:
    """What a run's results depend on: the mutated modules, the tests mutmut runs (and their
    helpers), the mutation set-up and the reviews. MUTATION.md records it; CI runs make mutation
    again when it differs."""
    config = mutmut_config()
    selected = [
        a for a in config.get("pytest_add_cli_args_test_selection", []) if str(a).startswith("tests/")
    ]
    files = [
        *MODULES,
        *sorted(set(selected)),
        "tests/conftest.py",
        "tests/support.py",
        "tests/postgres.py",
        "tests/commit_faults.py",
        "tests/mutmut_plugin.py",
        "mutation/equivalent.toml",
        "scripts/mutation_report.py",
    ]
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    for name in files:
        path = ROOT / name
        digest.update(name.encode() + b"\0" + (path.read_bytes() if path.exists() else b"(missing)") + b"\0")
    return digest.hexdigest()[:16]


DIGEST_LINE = "Inputs of this run (mutated modules, their tests, the set-up, the reviews): `{}`."


def up_to_date(out: Path) -> bool:
    return out.exists() and DIGEST_LINE.format(inputs_digest()) in out.read_text("utf-8")


def pytest_args() -> list[str]:
    """What mutmut adds to every pytest run (pyproject.toml's [tool.mutmut] pytest_add_cli_args)."""
    return [str(a) for a in mutmut_config().get("pytest_add_cli_args", [])]  # type: ignore[attr-defined]


def kills(name: str, test: str, *marks: str) -> bool:
    """Whether ``test``, run alone in mutmut's copy of the project with only ``name`` active, fails."""
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-n0", *pytest_args(), *marks, test],
        cwd="mutants",
        env={**os.environ, "MUTANT_UNDER_TEST": name},
        capture_output=True,
        text=True,
    )
    return run.returncode == 1


def results(reviewed: dict[str, dict[str, str]], problems: list[str]) -> list[ModuleResult]:
    found: list[ModuleResult] = []
    seen: set[str] = set()
    for path, label in MODULES.items():
        meta = Path("mutants") / f"{path}.meta"
        if not meta.exists():
            problems.append(f"{path}: no results (mutants/{path}.meta): run mutmut first")
            continue
        exit_codes: dict[str, int | None] = json.loads(meta.read_text("utf-8"))["exit_code_by_key"]
        module = ModuleResult(path, label)
        for name, code in sorted(exit_codes.items(), key=lambda item: _natural(item[0])):
            status = status_by_exit_code[code]
            module.counts[status] = module.counts.get(status, 0) + 1
            entry = reviewed.get(name)
            if entry is not None:
                seen.add(name)
            if status in ("killed", "timeout"):
                if entry is not None and entry["kind"] != "killed":
                    problems.append(f"{name}: reviewed as {entry['kind']}, but {status} now: remove it")
                continue
            survivor = Survivor(name, status, mutation_of(name, path))
            if entry is not None and entry["kind"] != "killed":
                if not same_mutation(entry.get("mutation", ""), survivor.mutation):
                    problems.append(
                        f"{name}: reviewed as\n{entry.get('mutation')}\nbut is now\n{survivor.mutation}"
                    )
                else:
                    survivor.kind, survivor.reason = entry["kind"], entry.get("reason")
                    if survivor.kind == "postgresql":
                        survivor.verified = kills(name, entry["killed_by"], "-m", "postgresql")
                        if not survivor.verified:
                            problems.append(f"{entry['killed_by']} does not kill {name} on PostgreSQL")
            if not survivor.reason:
                problems.append(f"{name} ({status}) has no reason:\n{survivor.mutation}")
            module.survivors.append(survivor)
        found.append(module)
    for name in sorted(set(reviewed) - seen):
        problems.append(f"{name}: reviewed, but no mutant of this run has that name: remove it")
    return found


def closed_gaps(reviewed: dict[str, dict[str, str]], problems: list[str]) -> list[tuple[str, str, bool]]:
    """Mutants that survived once, each run again against the test that now kills it alone."""
    closed = []
    for name, entry in reviewed.items():
        if entry.get("kind") != "killed":
            continue
        path = name.split(".x", 1)[0].replace(".", "/") + ".py"
        try:
            found = mutation_of(name, path)
        except (FileNotFoundError, KeyError):
            problems.append(f"{name}: no such mutant in this run: remove it")
            continue
        if not same_mutation(entry.get("mutation", ""), found):
            problems.append(f"{name}: reviewed as\n{entry.get('mutation')}\nbut is now\n{found}")
            continue
        verified = kills(name, entry["killed_by"])
        if not verified:
            problems.append(f"{entry['killed_by']} does not kill {name}")
        closed.append((name, entry["killed_by"], verified))
    return closed


def _natural(name: str) -> tuple[str, int]:
    stem, _, number = name.rpartition("__mutmut_")
    return stem, int(number) if number.isdigit() else 0


def write(modules: list[ModuleResult], closed: list[tuple[str, str, bool]], out: Path) -> None:
    def total(key: str) -> int:
        return sum(m.counts.get(key, 0) for m in modules)

    lines = [
        "# Mutation testing of the error paths",
        "",
        "Written by `make mutation`: mutmut mutates the modules below and runs each mutant against the",
        "fast tests that reach the mutated function (SQLite only, no dev server);",
        "`scripts/mutation_report.py` reads the results. Score = detected / (mutants - equivalent), where",
        "detected = killed + timeout (the tests never finished) + killed on PostgreSQL (run here, see",
        "below). Every survivor is listed with its mutation and the reviewed reason it survives",
        "(`mutation/equivalent.toml`); the counts, the scores and the list come from the run.",
        "",
        DIGEST_LINE.format(inputs_digest()),
        "",
        "| module | what | mutants | killed | timeout | survived | equivalent | killed on PostgreSQL | score |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in modules:
        c = m.counts
        not_killed = m.total - c.get("killed", 0) - c.get("timeout", 0)
        lines.append(
            f"| `{m.path}` | {m.label} | {m.total} | {c.get('killed', 0)} | {c.get('timeout', 0)} "
            f"| {not_killed} | {m.equivalent} | {m.on_postgresql} | {m.score:.1%} |"
        )
    lines += [
        "",
        f"All modules: {sum(m.total for m in modules)} mutants, {total('killed')} killed, "
        f"{total('timeout')} timeout, {total('survived')} survived, {total('no tests')} reached by no test, "
        f"{sum(m.equivalent for m in modules)} equivalent, {sum(m.on_postgresql for m in modules)} killed on "
        "PostgreSQL.",
        "",
    ]
    if closed:
        lines += [
            "## Gaps closed by a test",
            "",
            "Mutants that survived before these tests existed, each run again here against that test alone.",
            "",
        ]
        lines += [f"- `{name}`: {'killed' if ok else 'NOT KILLED'} by `{test}`" for name, test, ok in closed]
        lines.append("")
    lines += ["## Survivors", ""]
    for m in modules:
        if not m.survivors:
            continue
        lines += [f"### `{m.path}`", ""]
        for s in m.survivors:
            kind = s.kind or s.status
            if s.kind == "postgresql":
                kind = "killed on PostgreSQL" if s.verified else "NOT killed on PostgreSQL"
            mutation = "; ".join(f"`{line}`" for line in s.mutation.splitlines()) or "(no diff)"
            lines.append(f"- `{s.name.rpartition('.')[2]}` ({kind}): {mutation}")
            lines.append(f"  - {s.reason or 'NO REASON'}")
        lines.append("")
    out.write_text("\n".join(lines), "utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--min-score", type=float, default=0.97)
    parser.add_argument("--out", type=Path, default=ROOT / "MUTATION.md")
    parser.add_argument(
        "--up-to-date",
        action="store_true",
        help="only say (exit 0 or 1) whether --out is the report of the current inputs",
    )
    args = parser.parse_args()
    os.chdir(ROOT)
    if args.up_to_date:
        current = up_to_date(args.out)
        print(f"{args.out.name} is {'the report of' if current else 'not the report of'} the current inputs")
        return 0 if current else 1

    problems: list[str] = []
    reviewed = load_reviewed(problems)
    modules = results(reviewed, problems)
    closed = closed_gaps(reviewed, problems)
    write(modules, closed, args.out)

    for m in modules:
        low = m.score < args.min_score
        scored = m.total - m.equivalent
        print(f"{m.score:7.1%}  {m.path} ({m.detected} of {scored} detected){'  < minimum' if low else ''}")
        if low:
            problems.append(f"{m.path}: {m.score:.1%} of its non-equivalent mutants detected")
    print(f"wrote {args.out.relative_to(ROOT)}")
    for problem in problems:
        print(f"\n{problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
