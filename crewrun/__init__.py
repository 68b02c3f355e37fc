"""What a user's crew code may import from crewrun: declaring a tool's policy next to the tool.

    from crewrun import tool_policy
    tool_policy(MySearchTool, service="search-api", timeout_s=20, on_failure={"authentication": "tell_llm"})

``service`` names the circuit breaker its calls count against (default: the tool's name);
``timeout_s`` bounds one call; ``on_failure`` maps a category or a failure code to ``retry`` (the
attempt fails and its category decides: back off and retry, or pause), ``tell_llm`` (the agent is
told and may correct itself), ``pause`` or ``fail``; ``replay`` (default true) lets a retried task
reuse this tool's recorded answers. A deployment's ``CREWRUN_TOOLS`` settings win field by field.
"""

from activities.tool_boundary import ToolPolicy, tool_policy

__all__ = ["ToolPolicy", "tool_policy"]
