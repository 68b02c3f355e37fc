"""The research desk: a researcher with a search tool, then an analyst whose summary is a
structured output checked by a guardrail. Three crews from one project:

- ``ResearchDesk`` (a ``@CrewBase`` class): sequential;
- ``managed_crew()``: the same agents under a manager that delegates (hierarchical process);
- ``reviewed_crew()``: the summary waits for a person's approval (``human_input``).

Agents take their LLM from the environment, as a ``crewai create crew`` project does (``MODEL``,
``OPENAI_BASE_URL``, ``OPENAI_API_KEY``).
"""

from typing import Any

from crewai import Agent, Crew, Process, Task
from crewai.agents.agent_builder.base_agent import BaseAgent
from crewai.project import CrewBase, agent, crew, task
from pydantic import BaseModel, Field

from research_desk.tools.search import WebSearchTool


class Summary(BaseModel):
    topic: str
    key_points: list[str] = Field(min_length=1)
    confidence: float = Field(ge=0, le=1)


def summary_has_points(output: Any) -> tuple[bool, Any]:
    """A guardrail: a summary without key points goes back to the analyst."""
    summary = output.pydantic
    if isinstance(summary, Summary) and summary.key_points:
        return True, output
    return False, "Give at least one key point."


@CrewBase
class ResearchDesk:
    """Research with a tool, then a structured summary."""

    agents: list[BaseAgent]
    tasks: list[Task]

    @agent
    def researcher(self) -> Agent:
        return Agent(config=self.agents_config["researcher"], tools=[WebSearchTool()])  # type: ignore[index]

    @agent
    def analyst(self) -> Agent:
        return Agent(config=self.agents_config["analyst"])  # type: ignore[index]

    @task
    def research_task(self) -> Task:
        return Task(config=self.tasks_config["research_task"])  # type: ignore[index]

    @task
    def summary_task(self) -> Task:
        return Task(
            config=self.tasks_config["summary_task"],  # type: ignore[index]
            output_pydantic=Summary,
            guardrail=summary_has_points,
            output_file="summary-{topic}.json",
        )

    @crew
    def crew(self) -> Crew:
        return Crew(agents=self.agents, tasks=self.tasks, process=Process.sequential)


def managed_crew() -> Crew:
    """The desk under a manager: each task is the manager's, who delegates to a coworker."""
    desk = ResearchDesk()
    base = desk.crew()
    tasks = [Task(description=t.description, expected_output=t.expected_output) for t in base.tasks]
    return Crew(agents=base.agents, tasks=tasks, process=Process.hierarchical, manager_llm=base.agents[0].llm)


def reviewed_crew() -> Crew:
    """The desk, with a person approving the summary before the crew ends."""
    base = ResearchDesk().crew()
    base.tasks[-1].human_input = True
    return base
