"""The Grafana dashboard and the Prometheus rules reference only metrics the services export."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from backend.metrics import Metrics, SharedStateCollector

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
METRIC = re.compile(r"\b(crewrun_[a-z_]+)\b")


def exported_names() -> set[str]:
    metrics = Metrics()
    metrics.add_collector(SharedStateCollector(lambda: [("svc", "open")], lambda _status: 0, lambda: 0))
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"], "gauge": [""]}
    # From the families, not the samples: a labelled counter has no sample before its first event.
    return {family.name + suffix for family in metrics.registry.collect() for suffix in suffixes[family.type]}


def test_grafana_dashboard_is_valid_json_using_exported_metrics_only() -> None:
    dashboard = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {name for expr in exprs for name in METRIC.findall(expr)}
    assert len(dashboard["panels"]) >= 10 and used
    assert used <= exported_names(), sorted(used - exported_names())


def test_prometheus_rules_use_exported_metrics_only() -> None:
    rules = yaml.safe_load((DEPLOY / "prometheus-rules.yml").read_text())
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    used = {name for expr in exprs for name in METRIC.findall(expr)}
    assert used and used <= exported_names(), sorted(used - exported_names())


# ----- temporal-docker-compose.yml: what it promises (docker-compose config in .ci/run parses it;
# no Docker engine runs here, so it is never started)

COMPOSE = yaml.safe_load((DEPLOY.parent / "temporal-docker-compose.yml").read_text())
ONE_SHOT = {name for name, s in COMPOSE["services"].items() if s.get("restart") == "no"}


def environment_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    return dict(env) if isinstance(env, dict) else dict(item.split("=", 1) for item in env)


def test_every_crewrun_setting_the_compose_file_sets_exists() -> None:
    from backend.settings import Settings

    names = {
        key for s in COMPOSE["services"].values() for key in environment_of(s) if key.startswith("CREWRUN_")
    }
    assert len(names) >= 8
    unknown = {n for n in names if n.removeprefix("CREWRUN_").lower() not in Settings.model_fields}
    assert unknown == set()


def test_every_image_is_pinned_to_a_version() -> None:
    images = {name: s["image"] for name, s in COMPOSE["services"].items() if "image" in s}
    assert len(images) == 6
    loose = {n: i for n, i in images.items() if not re.fullmatch(r"[\w./-]+:\d+\.\d+(\.\d+)?", i)}
    assert loose == {}
    built = [name for name, s in COMPOSE["services"].items() if "build" in s]
    assert sorted(built) == ["crewrun-api", "crewrun-worker"] and (DEPLOY.parent / "Dockerfile").exists()


def test_every_long_running_service_has_a_health_check() -> None:
    assert {"temporal-schema", "temporal-search-attributes"} == ONE_SHOT
    missing = [
        name for name, s in COMPOSE["services"].items() if name not in ONE_SHOT and "healthcheck" not in s
    ]
    assert missing == []


def test_the_search_attributes_registered_are_the_ones_the_workflow_upserts() -> None:
    from backend.settings import SEARCH_ATTRIBUTES

    command = " ".join(COMPOSE["services"]["temporal-search-attributes"]["command"])
    loop = re.search(r"for name in ([\w ]+); do", command)
    assert loop is not None and "--type Keyword" in command
    assert sorted(loop.group(1).split()) == sorted(SEARCH_ATTRIBUTES)
