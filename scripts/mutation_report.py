"""MUTATION.md from the results of the last ``mutmut run`` (``make mutation``).

Reads mutmut's per-file results (``mutants/<module>.py.meta``: the exit code of every mutant's
test run, mapped to a status the way ``mutmut results`` maps it), and the reviewed list of
survivors that are not gaps (``mutation/equivalent.toml``). Writes, per error-path module: killed,
survived, timeout, no tests, the score (killed / (mutants - equivalent)), and every survivor
with its mutation and its reason. The scores and the survivors come from the run; only the
reasons of equivalent mutants are typed, by whoever read the mutant.

Fails (exit 1) when a module scores under ``--min-score``, when a survivor (or a mutant no test
reached) has no reason, or when a reviewed entry no longer matches its mutant (the function
changed: the mutant numbered so is another mutation now, and needs another look).
Run from the repository root, after ``mutmut run``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from mutmut.mutation.diff_apply import get_diff_for_mutant
from mutmut.stats import status_by_exit_code

ROOT = Path(__file__).resolve().parent.parent
# The modules make mutation scores: pyproject.toml's [tool.mutmut] only_mutate, in this order.
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


@dataclass
class Survivor:
    name: str
    status: str
    mutation: str  # the changed lines: "-old" / "+new"
    reason: str | None = None
    equivalent: bool = False


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
        return sum(1 for s in self.survivors if s.equivalent)

    @property
    def score(self) -> float:
        scored = self.total - self.equivalent
        return self.counts.get("killed", 0) / scored if scored else 1.0


def mutation_of(name: str, path: str) -> str:
    """The lines a mutant changes, as ``mutmut show`` prints them (without the file header)."""
    diff = get_diff_for_mutant(name, path=path).splitlines()
    changed = [line for line in diff[2:] if line[:1] in "+-"]
    return "\n".join(" ".join(line.split()) for line in changed)


def load_reviewed() -> dict[str, dict[str, str]]:
    data = tomllib.loads(REVIEWED.read_text("utf-8")) if REVIEWED.exists() else {}
    return {name: dict(entry) for name, entry in data.items()}


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
            if status == "killed":
                continue
            survivor = Survivor(name, status, mutation_of(name, path))
            entry = reviewed.get(name)
            if entry is not None:
                seen.add(name)
                if " ".join(entry.get("mutation", "").split()) != " ".join(survivor.mutation.split()):
                    problems.append(
                        f"{name}: reviewed as\n{entry.get('mutation')}\nbut is now\n{survivor.mutation}"
                    )
                else:
                    survivor.reason = entry.get("reason")
                    survivor.equivalent = entry.get("kind", "equivalent") == "equivalent"
            if not survivor.reason:
                problems.append(f"{name} ({status}) has no reason:\n{survivor.mutation}")
            module.survivors.append(survivor)
        found.append(module)
    for name in sorted(set(reviewed) - seen):
        problems.append(f"{name}: reviewed, but not a survivor of this run (killed now, or gone): remove it")
    return found


def _natural(name: str) -> tuple[str, int]:
    stem, _, number = name.rpartition("__mutmut_")
    return stem, int(number) if number.isdigit() else 0


def verify_kills(tests_by_mutant: dict[str, str], problems: list[str]) -> dict[str, bool]:
    """Each named test, run against its mutant (and only it), must fail."""
    verified = {}
    for name, test in tests_by_mutant.items():
        env = {**os.environ, "MUTANT_UNDER_TEST": name}
        run = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-n0", test],
            cwd="mutants",
            env=env,
            capture_output=True,
            text=True,
        )
        verified[name] = run.returncode == 1
        if not verified[name]:
            problems.append(f"{test} does not kill {name} (pytest exit {run.returncode})")
    return verified


def write(modules: list[ModuleResult], kills: dict[str, str], verified: dict[str, bool], out: Path) -> None:
    total = {
        k: sum(m.counts.get(k, 0) for m in modules) for k in ("killed", "survived", "timeout", "no tests")
    }
    lines = [
        "# Mutation testing of the error paths",
        "",
        "Generated by `make mutation` (mutmut over the modules below, each mutant against the fast",
        "tests that reach its function; `scripts/mutation_report.py` wrote this file). Score = killed /",
        "(mutants - equivalent). Survivors list their mutation and why they survive: the reasons are",
        "reviewed entries of `mutation/equivalent.toml`; everything else comes from the run.",
        "",
        "| module | what | mutants | killed | survived | timeout | no tests | equivalent | score |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in modules:
        c = m.counts
        lines.append(
            f"| `{m.path}` | {m.label} | {m.total} | {c.get('killed', 0)} | {c.get('survived', 0)} "
            f"| {c.get('timeout', 0)} | {c.get('no tests', 0)} | {m.equivalent} | {m.score:.1%} |"
        )
    lines += [
        "",
        f"All modules: {sum(m.total for m in modules)} mutants, {total['killed']} killed, "
        f"{total['survived']} survived, {total['timeout']} timeout, {total['no tests']} no tests, "
        f"{sum(m.equivalent for m in modules)} equivalent.",
        "",
    ]
    if kills:
        lines += [
            "## Gaps closed by a test",
            "",
            "Mutants that once survived, each run again against the test that now kills it alone.",
            "",
        ]
        for name, test in kills.items():
            mark = "killed" if verified.get(name) else "NOT KILLED"
            lines.append(f"- `{name}`: {mark} by `{test}`")
        lines.append("")
    lines += ["## Survivors", ""]
    for m in modules:
        if not m.survivors:
            continue
        lines += [f"### `{m.path}`", ""]
        for s in m.survivors:
            kind = "equivalent" if s.equivalent else s.status
            mutation = "; ".join(f"`{line}`" for line in s.mutation.splitlines()) or "(no diff)"
            lines.append(f"- `{s.name.rpartition('.')[2]}` ({kind}): {mutation}")
            lines.append(f"  - {s.reason or 'NO REASON'}")
        lines.append("")
    out.write_text("\n".join(lines), "utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--min-score", type=float, default=0.97)
    parser.add_argument("--out", type=Path, default=ROOT / "MUTATION.md")
    args = parser.parse_args()
    os.chdir(ROOT)

    problems: list[str] = []
    reviewed = load_reviewed()
    kills = {name: e["killed_by"] for name, e in reviewed.items() if e.get("kind") == "killed"}
    survivors_reviewed = {name: e for name, e in reviewed.items() if e.get("kind") != "killed"}
    modules = results(survivors_reviewed, problems)
    verified = verify_kills(kills, problems)
    write(modules, kills, verified, args.out)

    for m in modules:
        flag = "" if m.score >= args.min_score else f"  < {args.min_score:.0%}"
        print(f"{m.score:7.1%}  {m.path} ({m.counts.get('killed', 0)} of {m.total - m.equivalent}){flag}")
        if m.score < args.min_score:
            problems.append(f"{m.path}: {m.score:.1%} of its non-equivalent mutants killed")
    print(f"wrote {args.out.relative_to(ROOT)}")
    for problem in problems:
        print(f"\n{problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
