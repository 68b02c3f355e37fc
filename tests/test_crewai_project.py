"""Importing a CrewAI project's config/agents.yaml + config/tasks.yaml as a CrewSpec."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from backend.crewai_project import find_config, import_project

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "research_crew"
LLM = {"model": "gpt-4o-mini", "base_url": "http://127.0.0.1:9999/v1"}

AGENTS_YAML = """\
researcher:
  role: Senior Researcher
  goal: Find facts about {topic}
  backstory: >
    Careful.
writer:
  role: Writer
  goal: Write about {topic}
"""

TASKS_YAML = """\
research:
  description: Research {topic}
  expected_output: Ten facts
  agent: researcher
write:
  description: Write the report
  expected_output: A report
  agent: writer
"""


def write_project(config_dir: Path, agents: str = AGENTS_YAML, tasks: str = TASKS_YAML) -> None:
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "agents.yaml").write_text(agents, encoding="utf-8")
    (config_dir / "tasks.yaml").write_text(tasks, encoding="utf-8")


# --- the shipped example ------------------------------------------------------------------------


def test_example_research_crew_imports_three_agents_and_four_tasks() -> None:
    spec, warnings = import_project(EXAMPLE, name="research", llm=LLM)

    assert warnings == []
    assert spec.name == "research"
    assert [a.name for a in spec.agents] == ["researcher", "analyst", "writer"]
    assert [a.role for a in spec.agents] == ["Senior Researcher", "Research Analyst", "Report Writer"]
    assert [(t.name, t.agent, t.context) for t in spec.tasks] == [
        ("research", "researcher", None),
        ("analyse", "analyst", None),
        ("outline", "writer", ["analyse"]),
        ("write", "writer", ["analyse", "outline"]),
    ]
    assert [spec.context_of(t) for t in spec.tasks] == [[], ["research"], ["analyse"], ["analyse", "outline"]]
    assert spec.placeholders() == {"topic"}
    assert {a.llm.model for a in spec.agents} == {"gpt-4o-mini"}
    assert {a.llm.base_url for a in spec.agents} == {"http://127.0.0.1:9999/v1"}


def test_folded_yaml_backstory_is_stripped_of_its_trailing_newline() -> None:
    spec, _ = import_project(EXAMPLE, name="research", llm=LLM)

    assert spec.agent("researcher").backstory == (
        "A methodical researcher who cites sources and separates facts from opinions."
    )


def test_find_config_finds_the_example_config_folder() -> None:
    assert find_config(EXAMPLE) == (EXAMPLE / "config" / "agents.yaml", EXAMPLE / "config" / "tasks.yaml")


# --- layouts ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "config_dir",
    [
        Path("."),  # files right in the given folder
        Path("config"),
        Path("src") / "my_crew" / "config",  # `crewai create crew my_crew`
    ],
)
def test_project_layouts_are_found(tmp_path: Path, config_dir: Path) -> None:
    write_project(tmp_path / config_dir)

    spec, warnings = import_project(tmp_path, name="mine", llm=LLM)

    assert find_config(tmp_path) == (
        (tmp_path / config_dir / "agents.yaml"),
        (tmp_path / config_dir / "tasks.yaml"),
    )
    assert warnings == []
    assert [a.name for a in spec.agents] == ["researcher", "writer"]
    assert [(t.name, t.agent) for t in spec.tasks] == [("research", "researcher"), ("write", "writer")]


def test_config_folder_is_preferred_over_src_layout(tmp_path: Path) -> None:
    write_project(tmp_path / "config")
    write_project(tmp_path / "src" / "other" / "config", agents="{}", tasks="{}")

    assert find_config(tmp_path) == (tmp_path / "config" / "agents.yaml", tmp_path / "config" / "tasks.yaml")


# --- what is and is not imported ----------------------------------------------------------------


def test_keys_crewrun_does_not_model_are_reported_as_warnings(tmp_path: Path) -> None:
    agents = AGENTS_YAML.replace(
        "  role: Senior Researcher\n",
        "  role: Senior Researcher\n  tools: [SerperDevTool]\n  verbose: true\n  allow_delegation: false\n",
    )
    tasks = TASKS_YAML.replace(
        "  agent: writer\n", "  agent: writer\n  output_file: report.md\n  tools: [FileWriterTool]\n"
    )
    write_project(tmp_path / "config", agents, tasks)

    spec, warnings = import_project(tmp_path, name="mine", llm=LLM)

    assert warnings == [
        "agent researcher: ignored key 'allow_delegation'",
        "agent researcher: ignored key 'tools'",
        "agent researcher: ignored key 'verbose'",
        "task write: ignored key 'output_file'",
        "task write: ignored key 'tools'",
    ]
    assert [t.name for t in spec.tasks] == ["research", "write"]


def test_agent_level_llm_string_overrides_the_model_only(tmp_path: Path) -> None:
    agents = AGENTS_YAML.replace("  role: Writer\n", "  role: Writer\n  llm: some-model\n")
    write_project(tmp_path / "config", agents)

    spec, warnings = import_project(tmp_path, name="mine", llm=LLM | {"api_key_env": "SIM_KEY"})

    assert warnings == []
    writer, researcher = spec.agent("writer").llm, spec.agent("researcher").llm
    assert (writer.model, writer.base_url, writer.api_key_env) == (
        "some-model",
        "http://127.0.0.1:9999/v1",
        "SIM_KEY",
    )
    assert (researcher.model, researcher.base_url, researcher.api_key_env) == (
        "gpt-4o-mini",
        "http://127.0.0.1:9999/v1",
        "SIM_KEY",
    )


@pytest.mark.parametrize(
    ("context_yaml", "context"),
    [
        ("  context: [research]\n", ["research"]),
        ("  context:\n    - research\n", ["research"]),
        ("  context: []\n", []),  # explicitly none
        ("  context: research\n", ["research"]),  # one name without a list
        ("  context:\n", []),  # null: none as well
        ("", None),  # absent: CrewAI's default, every earlier task
    ],
)
def test_task_context_is_kept(tmp_path: Path, context_yaml: str, context: list[str] | None) -> None:
    write_project(tmp_path, tasks=TASKS_YAML + context_yaml)

    spec, warnings = import_project(tmp_path, name="mine", llm=LLM)

    assert warnings == []
    assert spec.tasks[1].context == context


def test_task_text_is_imported_stripped(tmp_path: Path) -> None:
    tasks = TASKS_YAML.replace(
        "  description: Write the report\n", "  description: >\n    Write the report\n"
    )
    write_project(tmp_path, tasks=tasks)

    spec, _ = import_project(tmp_path, name="mine", llm=LLM)

    assert spec.tasks[1].description == "Write the report"
    assert spec.tasks[1].expected_output == "A report"


# --- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "files",
    [
        [],
        ["agents.yaml"],
        ["tasks.yaml"],
        ["config/agents.yaml", "tasks.yaml"],  # the two files must sit side by side
    ],
)
def test_missing_yaml_files_raise_file_not_found(tmp_path: Path, files: list[str]) -> None:
    for name in files:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("{}", encoding="utf-8")

    with pytest.raises(FileNotFoundError) as caught:
        import_project(tmp_path, name="mine", llm=LLM)

    assert str(caught.value) == f"no agents.yaml + tasks.yaml under {tmp_path} (or its config/ folders)"


def test_missing_project_directory_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        import_project(tmp_path / "nope", name="mine", llm=LLM)


def test_task_naming_an_unknown_agent_fails_validation(tmp_path: Path) -> None:
    write_project(tmp_path, tasks=TASKS_YAML.replace("agent: writer", "agent: ghost"))

    with pytest.raises(ValidationError) as caught:
        import_project(tmp_path, name="mine", llm=LLM)

    [error] = caught.value.errors()
    assert error["type"] == "crew_spec_reference"
    assert error["ctx"]["problems"] == [{"loc": ["tasks", 1, "agent"], "msg": "unknown agent 'ghost'"}]


def test_yaml_that_is_not_a_mapping_is_rejected(tmp_path: Path) -> None:
    write_project(tmp_path, agents="- researcher\n- writer\n")

    with pytest.raises(ValueError) as caught:
        import_project(tmp_path, name="mine", llm=LLM)

    assert str(caught.value) == f"{tmp_path / 'agents.yaml'}: expected a mapping of names to definitions"


# --- the CLI ------------------------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "backend.cli", "import-crew", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_import_crew_prints_the_spec_as_json() -> None:
    result = run_cli("examples/research_crew", "--name", "r")

    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["name"] == "r"
    assert len(body["tasks"]) == 4
    assert [t["name"] for t in body["tasks"]] == ["research", "analyse", "outline", "write"]
    assert [a["name"] for a in body["agents"]] == ["researcher", "analyst", "writer"]
    assert {a["llm"]["model"] for a in body["agents"]} == {"gpt-4o-mini"}
    assert result.stderr == ""


def test_cli_import_crew_takes_model_and_endpoint_options() -> None:
    result = run_cli(
        "examples/research_crew",
        "--name",
        "r",
        "--model",
        "llama3",
        "--base-url",
        "http://127.0.0.1:11434/v1",
        "--api-key-env",
        "LOCAL_KEY",
    )

    assert result.returncode == 0, result.stderr
    llms = [a["llm"] for a in json.loads(result.stdout)["agents"]]
    assert {(llm["model"], llm["base_url"], llm["api_key_env"]) for llm in llms} == {
        ("llama3", "http://127.0.0.1:11434/v1", "LOCAL_KEY")
    }


def test_cli_import_crew_prints_warnings_on_stderr(tmp_path: Path) -> None:
    write_project(tmp_path, tasks=TASKS_YAML + "  output_file: report.md\n")

    result = run_cli(str(tmp_path), "--name", "r")

    assert result.returncode == 0, result.stderr
    assert result.stderr == "warning: task write: ignored key 'output_file'\n"
    assert len(json.loads(result.stdout)["tasks"]) == 2


def test_cli_import_crew_reports_a_missing_directory_on_stderr() -> None:
    result = run_cli("examples/does_not_exist", "--name", "r")

    assert result.stdout == ""
    assert result.stderr == (
        "import-crew: no agents.yaml + tasks.yaml under examples/does_not_exist (or its config/ folders)\n"
    )


def test_cli_import_crew_exits_2_for_a_missing_directory() -> None:
    result = run_cli("examples/does_not_exist", "--name", "r")

    assert result.returncode == 2


def test_agent_llm_mapping_is_reported_not_silently_dropped(tmp_path: Path) -> None:
    agents = AGENTS_YAML.replace("  role: Writer\n", "  role: Writer\n  llm:\n    model: big\n")
    write_project(tmp_path / "config", agents)

    spec, warnings = import_project(tmp_path, name="mine", llm=LLM)

    assert warnings == ["agent writer: ignored llm {'model': 'big'} (only a model name string)"]
    assert spec.agent("writer").llm.model == "gpt-4o-mini"
