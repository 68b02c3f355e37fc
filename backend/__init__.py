"""crewrun backend: settings, database, API, error taxonomy and the dev/test tooling."""
