"""Python crews for the tests, built the ways users build them."""

from __future__ import annotations

import os
from typing import Any

from crewai import LLM, Agent, Crew, Process, Task
from pydantic import BaseModel

from tests.crews.tools import CountTool, LookupTool


class Finding(BaseModel):
    topic: str
    facts: list[str]


def llm(agent: str, **kw: Any) -> Any:
    """An LLM of the simulator, named per agent so faults can be scripted per agent."""
    base_url = f"{os.environ['CREWRUN_TEST_SIM_URL']}/agents/{agent}/v1"
    return LLM(model="gpt-4o-mini", base_url=base_url, api_key="sk-test", **kw)


def react_llm(agent: str) -> Any:
    """An LLM without native function calling: CrewAI uses its ReAct text format for tools."""
    base = llm(agent)

    class NoFunctionCalling(type(base)):  # type: ignore[misc]
        def supports_function_calling(self) -> bool:
            return False

    return NoFunctionCalling(model=base.model, base_url=base.base_url, api_key="sk-test")


def structured_crew() -> Crew:
    """A structured first task whose output the second one reads as context."""
    finder = Agent(role="Finder", goal="Find facts about {topic}", backstory="Careful.", llm=llm("finder"))
    writer = Agent(role="Writer", goal="Write about {topic}", backstory="Clear.", llm=llm("writer"))
    find = Task(
        description="Find facts about {topic}", expected_output="Facts", agent=finder, output_pydantic=Finding
    )
    write = Task(
        description="Write a note on {topic}", expected_output="A note", agent=writer, context=[find]
    )
    return Crew(agents=[finder, writer], tasks=[find, write], process=Process.sequential)


def tool_crew(text_tools: bool = False) -> Crew:
    """One agent with two tools of different services, then a second agent without tools."""
    make = react_llm if text_tools else llm
    tools = [LookupTool(), CountTool()]
    searcher = Agent(
        role="Searcher", goal="Look up {topic}", backstory="Thorough.", llm=make("searcher"), tools=tools
    )
    reporter = Agent(role="Reporter", goal="Report on {topic}", backstory="Brief.", llm=make("reporter"))
    search = Task(description="Look up {topic}", expected_output="What the lookup said", agent=searcher)
    report = Task(description="Report on {topic}", expected_output="A report", agent=reporter)
    return Crew(agents=[searcher, reporter], tasks=[search, report], process=Process.sequential)


def react_tool_crew() -> Crew:
    return tool_crew(text_tools=True)


def hierarchical_crew() -> Crew:
    researcher = Agent(
        role="Researcher",
        goal="Research {topic}",
        backstory="Curious.",
        llm=llm("researcher"),
        tools=[LookupTool()],
    )
    writer = Agent(role="Writer", goal="Write about {topic}", backstory="Clear.", llm=llm("writer"))
    tasks = [
        Task(description="Research {topic}", expected_output="Findings"),
        Task(description="Write about {topic}", expected_output="A note"),
    ]
    return Crew(
        agents=[researcher, writer], tasks=tasks, process=Process.hierarchical, manager_llm=llm("manager")
    )


def reviewed_crew() -> Crew:
    writer = Agent(role="Writer", goal="Write about {topic}", backstory="Clear.", llm=llm("writer"))
    draft = Task(
        description="Draft a note on {topic}", expected_output="A note", agent=writer, human_input=True
    )
    return Crew(agents=[writer], tasks=[draft])


def async_crew() -> Crew:
    a = Agent(role="Alpha", goal="Alpha on {topic}", backstory="A.", llm=llm("alpha"))
    b = Agent(role="Beta", goal="Beta on {topic}", backstory="B.", llm=llm("beta"))
    c = Agent(role="Gamma", goal="Gamma on {topic}", backstory="C.", llm=llm("gamma"))
    one = Task(description="Alpha part of {topic}", expected_output="Part", agent=a, async_execution=True)
    two = Task(description="Beta part of {topic}", expected_output="Part", agent=b, async_execution=True)
    three = Task(
        description="Join the parts on {topic}", expected_output="Whole", agent=c, context=[one, two]
    )
    return Crew(agents=[a, b, c], tasks=[one, two, three])


def memory_crew() -> Crew:
    agent = Agent(role="Rememberer", goal="Remember", backstory="R.", llm=llm("rememberer"))
    return Crew(
        agents=[agent], tasks=[Task(description="x", expected_output="y", agent=agent)], planning=True
    )


def broken_crew() -> Crew:
    raise RuntimeError("this crew's module is broken (token sk-live-abcdefghijklmnop0123456789)")
