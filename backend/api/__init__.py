"""The HTTP API (FastAPI): routes per resource, problem+json errors, thin async handlers."""
