"""The deployment files, checked without a Docker engine: they parse, and everything they
name (files, services, metrics, commands) exists."""

from __future__ import annotations

import re
import tomllib
from dataclasses import fields
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from core.settings import load_settings
from schemas.outputs import MetricSnapshot
from streams.cli import build_parser

DOCKER = Path(__file__).resolve().parents[2] / "docker"
ROOT = DOCKER.parent
COMPOSE = yaml.safe_load((DOCKER / "compose.yaml").read_text())
EXPOSED = {f"factory_{f.name}" for f in fields(MetricSnapshot)} | {
    "factory_input_accepted_total", "factory_input_rejected_total",
    "factory_input_messages_total", "factory_duplicates_total", "factory_labels_unmatched_total"}


def _metrics_in(expr: str) -> set[str]:
    return set(re.findall(r"\bfactory_[a-z0-9_]+", expr))


def test_compose_has_the_services_and_the_shapes_asked_for() -> None:
    services = COMPOSE["services"]
    assert set(services) == {"kafka", "worker", "collector", "alertmanager", "prometheus",
                             "grafana"}
    assert services["worker"]["deploy"]["replicas"] == 2
    devices = services["collector"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia"
    assert "gpu" in devices[0]["capabilities"]
    for name, service in services.items():
        image = service.get("image", "")
        assert image, name
        if not image.startswith("factory-pulse"):
            assert re.search(r":v?\d", image), f"{name}: pin a version, not {image}"
        for dependency in service.get("depends_on", []):
            assert dependency in services


def test_every_mounted_file_and_the_dockerfile_exist() -> None:
    for name, service in COMPOSE["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DOCKER / source).exists(), f"{name}: {source}"
    build = COMPOSE["services"]["worker"]["build"]
    dockerfile = (DOCKER / build["context"] / build["dockerfile"]).resolve()
    assert dockerfile.exists()
    for line in dockerfile.read_text().splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), source


def test_service_commands_are_cli_commands() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert "factory-pulse" in scripts
    assert 'ENTRYPOINT ["factory-pulse"]' in (DOCKER / "Dockerfile").read_text()
    parser = build_parser()
    for name in ("worker", "collector"):
        parser.parse_args(COMPOSE["services"][name]["command"])


def test_the_mounted_configuration_loads() -> None:
    settings = load_settings({**COMPOSE["services"]["worker"]["environment"],
                              "FACTORY_CONFIG": str(DOCKER / "factory.toml")})
    assert settings.window_sizes == (60.0, 3600.0, 86400.0)
    assert settings.alertmanager.urls == ("http://alertmanager:9093",)


def test_the_alertmanager_config_routes_the_labels_the_workers_send() -> None:
    config = yaml.safe_load((DOCKER / "alertmanager" / "alertmanager.yml").read_text())
    assert set(config["route"]["group_by"]) <= {"alertname", "model", "severity", "scope"}
    assert config["route"]["receiver"] in {r["name"] for r in config["receivers"]}


def test_prometheus_config_and_rules_parse_and_name_real_metrics() -> None:
    config = yaml.safe_load((DOCKER / "prometheus" / "prometheus.yml").read_text())
    job = config["scrape_configs"][0]
    assert job["metrics_path"] == "/metrics"
    assert job["dns_sd_configs"][0]["names"] == ["worker"]
    mounted = {v.split(":")[1] for v in COMPOSE["services"]["prometheus"]["volumes"]}
    assert set(config["rule_files"]) <= mounted
    rules = yaml.safe_load((DOCKER / "prometheus" / "alerts.yml").read_text())
    alerts = [r for group in rules["groups"] for r in group["rules"]]
    assert len(alerts) >= 4
    for rule in alerts:
        assert {"alert", "expr", "for", "labels"} <= set(rule)
        assert re.fullmatch(r"\d+[smh]", rule["for"])
        assert _metrics_in(rule["expr"]) <= EXPOSED, rule["alert"]
        assert rule["expr"].count("(") == rule["expr"].count(")")


@pytest.mark.parametrize("path", sorted((DOCKER / "grafana").rglob("*.y*ml")))
def test_grafana_provisioning_parses(path: Path) -> None:
    assert yaml.safe_load(path.read_text())["apiVersion"] == 1


def test_grafana_dashboard_queries_real_metrics() -> None:
    dashboard: dict[str, Any] = orjson.loads(
        (DOCKER / "grafana" / "dashboards" / "factory-pulse.json").read_bytes())
    targets = [t for panel in dashboard["panels"] for t in panel["targets"]]
    assert len(targets) >= 6
    for target in targets:
        names = _metrics_in(target["expr"])
        assert names
        assert names <= EXPOSED
