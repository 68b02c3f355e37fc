"""Crews and tools the tests run on workers: Python crews as users write them, against the
simulator (its URL comes from CREWRUN_TEST_SIM_URL, set by the tests)."""
