"""``crewrun``: the command line (typer).

crewrun up [--demo]        the embedded stack, supervised, until Ctrl-C
crewrun status             every process of the running stack: pid, uptime, restarts
crewrun demo [--fresh]     the demo against a running stack, or a fresh one of its own
crewrun worker | api       one service in the foreground
crewrun simulator          the LLM simulator (a test and demo tool)
crewrun import-crew DIR    CrewAI agents.yaml + tasks.yaml -> CrewSpec JSON (and --register it)
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
from pathlib import Path
from types import FrameType
from typing import Annotated

import httpx
import typer

from backend.ports import free_port
from backend.settings import Settings, get_settings, with_crews

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Run CrewAI crews durably on Temporal.")


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _run_stack(settings: Settings, *, demo: bool, keep_running: bool, workers: int = 1) -> bool:
    import threading

    from backend.stack import PortInUse, Stack
    from backend.supervisor import Supervisor

    if demo:
        from backend.demo import with_demo_crews

        settings, environment = with_demo_crews(settings)
        os.environ.update(environment)  # the children inherit it
    stack = Stack(settings, workers=workers, postgres=settings.embedded_postgres)
    # Both explicitly: a shell starts background jobs with SIGINT ignored, and Ctrl-C must still work.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGINT, _raise_interrupt)
    outcome = {"ok": True}
    try:
        try:
            stack.start()
        except PortInUse as exc:
            typer.secho(f"crewrun up: {exc}", fg="red", err=True)
            raise typer.Exit(2) from exc
        database = "embedded PostgreSQL, data: " if stack.postgres else ""
        typer.echo(
            f"Temporal     127.0.0.1:{settings.temporal_port}  (data: {settings.data_dir}/temporal.db)"
        )
        typer.echo(f"Temporal UI  http://127.0.0.1:{settings.temporal_ui_port}")
        typer.echo(f"API          {stack.api_url}  (docs: {stack.api_url}/docs)")
        typer.echo(f"Console      {stack.api_url}/console/")
        typer.echo(f"Simulator    {stack.simulator_url}  (a test/demo LLM)")
        if stack.postgres:
            typer.echo(f"Database     {database}{settings.data_dir}/pg/  ({settings.database_url})")
        typer.echo(f"Logs         {settings.data_dir}/logs/   (crewrun status: every process)")
        demo_thread: threading.Thread | None = None
        if demo:
            from backend.demo import run_demo

            def demo_run() -> None:
                outcome["ok"] = False  # unless it returns saying so
                outcome["ok"] = run_demo(
                    stack.api_url,
                    stack.simulator_url,
                    temporal_address=f"127.0.0.1:{settings.temporal_port}",
                    namespace=settings.temporal_namespace,
                    breaker_failures=settings.breaker_consecutive_failures,
                    echo=typer.echo,
                )
                if keep_running:
                    typer.echo("stack is up; Ctrl-C stops it")

            demo_thread = threading.Thread(target=demo_run, name="crewrun-demo", daemon=True)
            demo_thread.start()
        elif keep_running:
            typer.echo("stack is up; Ctrl-C stops it")
        # The supervisor runs here, on the thread that started the children (see Supervisor.run),
        # while the demo talks to the stack from its own thread.
        supervisor = Supervisor(stack, say=lambda message: typer.secho(message, fg="yellow", err=True))
        if keep_running:
            supervisor.run()
        else:
            supervisor.run(until=lambda: demo_thread is None or not demo_thread.is_alive())
    except KeyboardInterrupt:
        typer.echo("stopping...")
    finally:
        stack.stop()
    return outcome["ok"]


CrewOption = Annotated[
    list[str] | None,
    typer.Option("--crew", help="A Python crew the workers carry: NAME=MODULE:ATTR (repeatable)"),
]
CrewPathOption = Annotated[
    list[Path] | None,
    typer.Option("--crew-path", help="A folder to import crews from (repeatable)"),
]


def _settings_with_crews(crews: list[str] | None, crew_paths: list[Path] | None) -> Settings:
    try:
        return with_crews(get_settings(), crews or [], [p.resolve() for p in crew_paths or []])
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc


@app.command()
def up(
    demo: Annotated[bool, typer.Option(help="Run the demo once the stack is up")] = False,
    workers: Annotated[int, typer.Option(min=1, max=16, help="Worker processes")] = 1,
    postgres: Annotated[
        bool, typer.Option(help="Backend DB on an embedded PostgreSQL under <data dir>/pg/")
    ] = False,
    crew: CrewOption = None,
    crew_path: CrewPathOption = None,
) -> None:
    """Start Temporal (SQLite, WAL), the simulator, workers and the API, and keep them up (a child
    that dies is restarted) until Ctrl-C."""
    settings = _settings_with_crews(crew, crew_path)
    if postgres:
        settings.embedded_postgres = True
    if not _run_stack(settings, demo=demo, keep_running=True, workers=workers):
        raise typer.Exit(1)


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="The raw status as JSON")] = False,
) -> None:
    """Every process of the running `crewrun up` in this data directory: pid, uptime, restarts."""
    from datetime import UTC, datetime

    from backend.supervisor import read_status

    settings = get_settings()
    found = read_status(settings.data_dir)
    if found is None:
        typer.secho(f"no crewrun up is running with data directory {settings.data_dir}", fg="red", err=True)
        raise typer.Exit(1)
    if as_json:
        typer.echo(json.dumps(found, indent=2))
        return
    now = datetime.now(UTC)
    typer.echo(f"supervisor pid {found['supervisor_pid']}")
    typer.echo(f"{'process':12} {'state':11} {'pid':>8} {'uptime':>9} {'restarts':>8}  last exit")
    for child in found["children"]:
        up_s = (now - datetime.fromisoformat(child["started_at"])).total_seconds()
        uptime = f"{up_s:.0f} s" if child["state"] == "running" else "-"
        pid = str(child["pid"] or "-")
        typer.echo(
            f"{child['name']:12} {child['state']:11} {pid:>8} {uptime:>9} {child['restarts']:>8}  "
            f"{child['last_exit'] or ''}"
        )


@app.command("demo")
def demo_cmd(
    fresh: Annotated[bool, typer.Option(help="Start a fresh stack of its own on free ports")] = False,
    api_url: Annotated[str | None, typer.Option(help="API of a running stack")] = None,
    simulator_url: Annotated[str | None, typer.Option(help="Simulator of a running stack")] = None,
) -> None:
    """One execution per error-handling mechanism (rate limits, pause/resume, dead letter/replay,
    degraded, circuit breaker); exit 1 unless every one ended as designed."""
    settings = get_settings()
    if fresh:
        data_dir = Path(tempfile.mkdtemp(prefix="crewrun-demo-"))
        # The fresh stack's breaker cools down in 5 s instead of 30, so the demo is quick.
        os.environ.setdefault("CREWRUN_BREAKER_COOLDOWN_S", "5")
        settings = Settings(
            data_dir=data_dir,
            database_url="",
            temporal_port=free_port(),
            temporal_ui_port=free_port(),
            api_port=free_port(),
            simulator_port=free_port(),
            worker_metrics_port=free_port(),
            worker_sdk_metrics_port=free_port(),
        )
        ok = _run_stack(settings, demo=True, keep_running=False)
    else:
        from backend.demo import run_demo

        ok = run_demo(
            api_url or f"http://{settings.api_host}:{settings.api_port}",
            simulator_url or f"http://127.0.0.1:{settings.simulator_port}",
            temporal_address=settings.temporal_address,
            namespace=settings.temporal_namespace,
            breaker_failures=settings.breaker_consecutive_failures,
            echo=typer.echo,
        )
    if not ok:
        raise typer.Exit(1)


@app.command()
def worker(crew: CrewOption = None, crew_path: CrewPathOption = None) -> None:
    """Run one worker in the foreground."""
    import asyncio

    from worker import main as worker_main

    status = asyncio.run(worker_main(_settings_with_crews(crew, crew_path)))
    if status:
        raise typer.Exit(status)


@app.command()
def api(
    host: Annotated[str | None, typer.Option()] = None,
    port: Annotated[int | None, typer.Option()] = None,
) -> None:
    """Serve the HTTP API with uvicorn."""
    import uvicorn

    from backend.api.app import create_app
    from backend.api.security import is_loopback
    from backend.logging_setup import configure_logging

    settings = get_settings()
    configure_logging(settings.log_format, settings.log_level)
    bind = host or settings.api_host
    if not is_loopback(bind) and not settings.key_digests():
        typer.secho(
            f"crewrun api: refusing to listen on {bind} without API keys "
            "(set CREWRUN_API_KEYS or CREWRUN_API_KEY_HASHES, or bind 127.0.0.1)",
            fg="red",
            err=True,
        )
        raise typer.Exit(2)
    uvicorn.run(
        create_app(settings),
        host=host or settings.api_host,
        port=port or settings.api_port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=5,
    )


@app.command()
def simulator(
    port: Annotated[int | None, typer.Option()] = None,
    script: Annotated[
        Path | None, typer.Option(help="JSON/YAML file: {rules: [...]} applied at start")
    ] = None,
) -> None:
    """Serve the OpenAI-compatible LLM simulator (a test and demo tool, not a provider)."""
    import uvicorn
    import yaml

    from backend.simulator.app import create_simulator_app
    from backend.simulator.script import FaultRule

    sim = create_simulator_app()
    if script is not None:
        raw = yaml.safe_load(script.read_text())
        sim.state.script.add_rules([FaultRule(**r) for r in raw.get("rules", [])])
    # Scripted slow answers must not hold up a shutdown: give in-flight requests one second.
    uvicorn.run(
        sim,
        host="127.0.0.1",
        port=port or get_settings().simulator_port,
        log_level="warning",
        timeout_graceful_shutdown=1,
    )


@app.command("import-crew")
def import_crew(
    project: Annotated[Path, typer.Argument(help="CrewAI project dir (with config/agents.yaml, tasks.yaml)")],
    name: Annotated[str, typer.Option(help="Crew name")],
    model: Annotated[str, typer.Option()] = "gpt-4o-mini",
    base_url: Annotated[str | None, typer.Option(help="OpenAI-compatible endpoint")] = None,
    api_key_env: Annotated[str | None, typer.Option(help="Env var holding the key, on the worker")] = None,
    register: Annotated[str | None, typer.Option(help="API URL to POST the crew to")] = None,
) -> None:
    """Convert CrewAI's YAML layout into a CrewSpec; print it or register it with the API."""
    from pydantic import ValidationError

    from backend.crewai_project import import_project

    llm = (
        {"model": model}
        | ({"base_url": base_url} if base_url else {})
        | ({"api_key_env": api_key_env} if api_key_env else {})
    )
    try:
        spec, warnings = import_project(project, name=name, llm=llm)
    except (FileNotFoundError, ValueError, ValidationError) as exc:
        typer.secho(f"import-crew: {exc}", fg="red", err=True)
        raise typer.Exit(2) from exc
    for warning in warnings:
        typer.secho(f"warning: {warning}", fg="yellow", err=True)
    body = spec.model_dump(mode="json")
    if register is None:
        typer.echo(json.dumps(body, indent=2))
        return
    response = httpx.post(f"{register.rstrip('/')}/api/v1/crews", json=body, timeout=30)
    typer.echo(json.dumps(response.json(), indent=2))
    if response.status_code != 201:
        raise typer.Exit(1)


def main() -> None:
    try:
        # Without standalone mode click returns the exit code of typer.Exit instead of raising it.
        code = app(standalone_mode=False) or 0
    except typer.Exit as exc:
        code = exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        code = 130
    except Exception as exc:  # click usage errors and the like: print, do not dump a trace
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            code = exc.exit_code
        else:
            raise
    sys.stdout.flush()
    sys.stderr.flush()
    # A process that used the Temporal client can abort at interpreter exit (sdk-python#300)
    # after its work is done; exit with the command's own status instead.
    os._exit(code)


if __name__ == "__main__":
    main()
