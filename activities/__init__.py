"""Activities: the code that touches the outside world (CrewAI, LLMs, the backend DB)."""
