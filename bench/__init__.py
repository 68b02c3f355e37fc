"""crewrun benchmarks: `make bench` runs bench/run.py, which writes BENCHMARKS.md at the repo root."""
