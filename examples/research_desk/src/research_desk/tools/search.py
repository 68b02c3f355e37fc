"""A search tool that calls an HTTP service, like most tools do.

Its service answers ``POST {SEARCH_API_URL}/tools/web_search`` with ``{"result": ...}`` (crewrun's
simulator serves one for demos and tests). The tool raises on an error status, as a tool should:
crewrun's tool boundary reads the status and Retry-After from the exception, so a 429 waits and
retries the task, a 401 pauses the execution, and bad arguments go back to the agent.
"""

from __future__ import annotations

import os

import httpx
from crewai.tools import BaseTool
from pydantic import BaseModel, Field

from crewrun import tool_policy


class SearchInput(BaseModel):
    query: str = Field(description="What to search for")


class WebSearchTool(BaseTool):
    name: str = "web_search"
    description: str = "Search the web and return the most relevant result for a query."
    args_schema: type[BaseModel] = SearchInput

    def _run(self, query: str) -> str:
        base = os.environ.get("SEARCH_API_URL", "http://127.0.0.1:8765")
        response = httpx.post(f"{base}/tools/web_search", json={"query": query}, timeout=30)
        response.raise_for_status()
        return str(response.json()["result"])


# The search API is its own service (one circuit breaker for every agent using it); a call that
# hangs is given up after 20 s and counts as a timeout.
tool_policy(WebSearchTool, service="search-api", timeout_s=20)
