"""deploy/observability and the Kubernetes monitoring manifests say the same thing (issue 13): the
PrometheusRule carries exactly the groups of rules.yml (promtool tests those: tests/integration/
test_prometheus.py), and the exporter's Deployment, Service and ServiceMonitor agree on port and token."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def load(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def test_the_prometheusrule_carries_the_rules_of_rules_yml():
    (rule,) = load(DEPLOY / "k8s" / "monitoring" / "prometheusrule.yaml")
    (rules,) = load(DEPLOY / "observability" / "rules.yml")
    assert rule["kind"] == "PrometheusRule"
    assert rule["spec"]["groups"] == rules["groups"]


def test_the_exporter_its_service_and_its_servicemonitor_agree():
    deployment, service = load(DEPLOY / "k8s" / "base" / "exporter.yaml")
    (monitor,) = load(DEPLOY / "k8s" / "monitoring" / "servicemonitor.yaml")
    assert "exporter.yaml" in (DEPLOY / "k8s" / "base" / "kustomization.yaml").read_text()
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    port = container["ports"][0]
    assert container["command"][:2] == ["opsq", "exporter"] and str(port["containerPort"]) in container["command"]
    token = next(e for e in container["env"] if e["name"] == "OPSQ_EXPORTER_TOKEN")["valueFrom"]["secretKeyRef"]
    assert service["spec"]["ports"][0]["targetPort"] == port["name"]
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    assert monitor["spec"]["endpoints"][0]["authorization"]["credentials"] == token
    assert monitor["spec"]["selector"]["matchLabels"] == service["metadata"]["labels"]


def test_the_prometheus_rules_and_beat_alerts_share_their_thresholds():
    """One threshold, two evaluators (issue 13): the rules carry the defaults of beat's OPSQ_ALERT_* settings."""
    from workers.settings import Settings  # noqa: PLC0415

    defaults = {name: f.default for name, f in Settings.model_fields.items()}
    (rules,) = load(DEPLOY / "observability" / "rules.yml")
    by_name = {r["alert"]: r for g in rules["groups"] for r in g["rules"]}
    success = by_name["OpsqSuccessRateLow"]["expr"]
    assert f"< {defaults['alert_success_rate']:g}" in success and f">= {defaults['alert_min_sample']}" in success
    assert f"[{defaults['alert_success_window_s'] / 60:g}m]" in success
    assert f"> {defaults['alert_queue_depth']}" in by_name["OpsqQueueDepthHigh"]["expr"]
    assert by_name["OpsqQueueDepthHigh"]["for"] == f"{defaults['alert_queue_depth_for_s'] / 60:g}m"
    assert by_name["OpsqBreakerOpen"]["for"] == f"{defaults['alert_breaker_open_for_s'] / 60:g}m"
    oldest = by_name["OpsqOldestMessageTooOld"]
    assert f"> {defaults['alert_oldest_message_age_s']:g}" in oldest["expr"]
    assert oldest["for"] == f"{defaults['alert_oldest_message_for_s'] / 60:g}m"
    assert f"[{defaults['alert_success_window_s'] / 60:g}m]" in by_name["OpsqDeadLettersGrowing"]["expr"] or \
        f"offset {defaults['alert_success_window_s'] / 60:g}m" in by_name["OpsqDeadLettersGrowing"]["expr"]


def test_the_api_deployment_and_compose_service_serve_what_opsq_api_serves():
    """The HTTP API (issue 15) in Kubernetes and in compose: `opsq api` on the port its Service and probe name,
    with /v1/health (the one anonymous endpoint) as readiness."""
    deployment, service = load(DEPLOY / "k8s" / "base" / "api.yaml")
    assert "api.yaml" in (DEPLOY / "k8s" / "base" / "kustomization.yaml").read_text()
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    port = container["ports"][0]
    assert container["command"][:2] == ["opsq", "api"] and str(port["containerPort"]) in container["command"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/v1/health"
    assert service["spec"]["ports"][0]["targetPort"] == port["name"]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    (compose,) = load(DEPLOY / "docker-compose.yml")
    api = compose["services"]["api"]
    assert api["command"][:2] == ["opsq", "api"] and "8700" in api["command"] and api["profiles"] == ["api"]
