"""The Grafana dashboard and the Prometheus rules reference only metrics the services export."""

from __future__ import annotations

import json
import re
from pathlib import Path

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
