"""A pytest plugin for ``make mutation`` only (pyproject.toml's ``[tool.mutmut]`` loads it).

mutmut runs each mutant's tests in a process forked from one that already ran the suite, so
anything built once and cached was built from the original code. The classifier's rule table is
such a thing (``_rules`` is cached): its deciders (``_always``, ``_exact``, ``_exact_api_error``)
run while the table is built, so a mutant of one of them would never be the decider ``classify``
uses. Each test builds the table again, with whatever mutant is active (and mutmut sees which
tests reach those functions).
"""

from __future__ import annotations

import pytest


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    from backend.exceptions import classifier

    classifier._rules.cache_clear()
