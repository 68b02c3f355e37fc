"""Workflow definitions and the contracts shared by API, workflows and activities."""
