"""Tools that call the simulator's tool service over HTTP, as users' tools call their services."""

from __future__ import annotations

import os

import httpx
from crewai.tools import BaseTool
from pydantic import BaseModel, Field

from crewrun import tool_policy


def sim_url() -> str:
    return os.environ["CREWRUN_TEST_SIM_URL"]


def call_service(tool: str, arguments: dict[str, object]) -> str:
    """POST the arguments to the simulator's tool service; an error status raises, as a tool should."""
    response = httpx.post(f"{sim_url()}/tools/{tool}", json=arguments, timeout=10)
    response.raise_for_status()
    return str(response.json()["result"])


class LookupInput(BaseModel):
    query: str = Field(description="What to look up")


class LookupTool(BaseTool):
    name: str = "lookup"
    description: str = "Look a fact up in the reference service."
    args_schema: type[BaseModel] = LookupInput

    def _run(self, query: str) -> str:
        return call_service("lookup", {"query": query})


class CountInput(BaseModel):
    n: int = Field(description="How many")


class CountTool(BaseTool):
    name: str = "count"
    description: str = "Count things in the inventory service."
    args_schema: type[BaseModel] = CountInput

    def _run(self, n: int) -> str:
        return call_service("count", {"n": n})


tool_policy(LookupTool, service="reference-api", timeout_s=15)
