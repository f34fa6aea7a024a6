"""Offline checks of deploy/: manifests parse and match the Kubernetes API models, the
dashboard and alert rules name only metrics the gateway exports, and the examples decode
as gateway config.

The chart is rendered by Helm's own Go engine through `helm_python` (PyPI `helm-python-sdk`,
a dev dependency: no helm binary), once per values set (tests/deploy/rendering.py).
test_schemas.py validates every rendered object against the Kubernetes schemas. The PromQL
checks need `promtool` (Debian `prometheus`, installed by `./dev test`).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes.client
import pytest
import yaml

from gateway.config import decode_config
from gateway.metrics import GatewayMetrics
from gateway.usage_metrics import TOKEN_KINDS
from gateway.usage_writer.metrics import WriterMetrics
from tests.deploy.kube_schema import KUBE_VERSIONS
from tests.deploy.rendering import CHART, CHART_VALUES, DEPLOY, ROOT, VLLM, render_chart, render_vllm
from tests.deploy.rendering import env_example as _env_example

RULES = DEPLOY / "prometheus" / "llmops-rules.yaml"
DASHBOARD = DEPLOY / "grafana" / "llmops-dashboard.json"
USAGE_DASHBOARD = DEPLOY / "grafana" / "llmops-usage-cost.json"
DASHBOARDS = sorted((DEPLOY / "grafana").glob("*.json"))

# The gateway's metric names as dashboards and alerts see them. Kept literal on purpose:
# a rename in gateway/metrics.py fails test_metric_list_matches_the_gateway first.
LLMOPS_METRICS = {
    "llmops_requests_total",
    *(f"llmops_request_latency_seconds_{s}" for s in ("bucket", "count", "sum")),
    *(f"llmops_time_to_first_token_seconds_{s}" for s in ("bucket", "count", "sum")),
    "llmops_tokens_total",
    "llmops_upstream_errors_total",
    "llmops_retries_total",
    "llmops_inflight_requests",
    "llmops_circuit_state",
    "llmops_usage_records_dropped_total",
    "llmops_config_reloads_total",
    # requests held while a serving endpoint scales from zero (gateway/metrics.py; KEDA reads the gauge)
    "llmops_route_queued_requests",
    "llmops_route_queue_timeouts_total",
    # usage consumers (gateway/usage_metrics.py): tokens, cost, pricing coverage, A/B variants
    "llmops_cost_usd_total",
    "llmops_usage_priced_total",
    "llmops_usage_unpriced_total",
    "llmops_variant_requests_total",
    *(f"llmops_variant_latency_seconds_{s}" for s in ("bucket", "count", "sum")),
    "llmops_variant_tokens_total",
    "llmops_variant_cost_usd_total",
    # the usage writer (gateway/usage_writer/metrics.py), registered when it runs
    "llmops_usage_buffer_records",
    "llmops_usage_spill_bytes",
    "llmops_usage_writer_lag_seconds",
    "llmops_usage_records_written_total",
    "llmops_usage_records_spilled_total",
    "llmops_usage_records_replayed_total",
    *(f"llmops_usage_batch_write_seconds_{s}" for s in ("bucket", "count", "sum")),
}
# vLLM's names (vllm/v1/metrics/loggers.py); gpu_cache_usage_perc is the pre-0.10 name.
VLLM_METRICS = {
    "vllm:num_requests_waiting", "vllm:num_requests_running", "vllm:kv_cache_usage_perc",
    "vllm:gpu_cache_usage_perc", "vllm:prompt_tokens_total", "vllm:generation_tokens_total",
    *(f"vllm:{h}_{s}" for h in ("time_to_first_token_seconds", "e2e_request_latency_seconds")
      for s in ("bucket", "count", "sum")),
}
_LLMOPS_NAME = re.compile(r"\bllmops_[a-z0-9_]+")
_VLLM_NAME = re.compile(r"\bvllm:[a-z0-9_]+")
_PLACEHOLDER = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)\}")
_K8S_TYPES = {
    "ConfigMap": "V1ConfigMap", "Secret": "V1Secret", "Service": "V1Service", "ServiceAccount": "V1ServiceAccount",
    "Deployment": "V1Deployment", "StatefulSet": "V1StatefulSet", "Job": "V1Job",
    "PersistentVolumeClaim": "V1PersistentVolumeClaim", "HorizontalPodAutoscaler": "V2HorizontalPodAutoscaler",
    "PodDisruptionBudget": "V1PodDisruptionBudget", "Ingress": "V1Ingress", "NetworkPolicy": "V1NetworkPolicy",
}
_CRD_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}


# --- helpers -------------------------------------------------------------------------

def _unknown_keys(data: Any, type_name: str, path: str) -> list[str]:
    """Keys the model does not define: the client's from_dict drops them silently."""
    if m := re.fullmatch(r"(?:List\[|list\[)(.+)\]", type_name):
        return [e for i, item in enumerate(data) for e in _unknown_keys(item, m.group(1), f"{path}[{i}]")]
    if m := re.fullmatch(r"(?:Dict\[str, |dict\(str, )(.+)[\])]", type_name):
        return [e for k, v in data.items() for e in _unknown_keys(v, m.group(1), f"{path}.{k}")]
    klass = getattr(kubernetes.client, type_name, None)
    if klass is None or not isinstance(data, dict):
        return []  # primitives, quantities, IntOrString ("object")
    attrs = {json_key: attr for attr, json_key in klass.attribute_map.items()}
    errors = []
    for key, value in data.items():
        if key not in attrs:
            errors.append(f"{path}.{key}")
        elif value is not None:
            errors += _unknown_keys(value, klass.openapi_types[attrs[key]], f"{path}.{key}")
    return errors


def to_model(doc: dict[str, Any]) -> Any:
    """Deserialize a manifest into its kubernetes.client model, rejecting unknown keys too."""
    type_name = _K8S_TYPES[doc["kind"]]
    assert _unknown_keys(doc, type_name, doc["kind"]) == []
    return kubernetes.client.ApiClient().deserialize(json.dumps(doc), type_name, "application/json")


def _metric_names(text: str) -> tuple[set[str], set[str]]:
    return set(_LLMOPS_NAME.findall(text)), set(_VLLM_NAME.findall(text))


# --- every YAML file -----------------------------------------------------------------

def test_every_yaml_file_parses() -> None:
    files = [p for p in DEPLOY.rglob("*.y*ml") if "templates" not in p.parts]
    assert len(files) >= 12
    for path in files:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        assert docs and all(isinstance(d, dict) for d in docs), path


# --- vLLM ----------------------------------------------------------------------------

def test_vllm_placeholders_are_all_defined() -> None:
    env = _env_example()
    for path in VLLM.glob("*.yaml"):
        missing = set(_PLACEHOLDER.findall(path.read_text())) - env.keys()
        assert not missing, f"{path.name}: {missing} not in vllm.env.example"


@pytest.mark.parametrize("name", ["statefulset.yaml", "deployment.yaml"])
def test_vllm_workload_has_gpu_probes_and_port(name: str) -> None:
    (doc,) = render_vllm(name)
    workload = to_model(doc)
    pod = workload.spec.template.spec
    (ctr,) = pod.containers
    assert ctr.resources.limits["nvidia.com/gpu"] == "1" == ctr.resources.requests["nvidia.com/gpu"]
    assert [(p.name, p.container_port) for p in ctr.ports] == [("http", 8000)]
    args = " ".join(ctr.args)
    for flag in ("--model=", "--served-model-name=", "--port=8000", "--gpu-memory-utilization=", "--max-model-len="):
        assert flag in args
    for probe in (ctr.startup_probe, ctr.readiness_probe, ctr.liveness_probe):
        assert probe.http_get.path == "/health" and probe.http_get.port == "http"
    assert ctr.startup_probe.period_seconds * ctr.startup_probe.failure_threshold >= 1200  # model download
    assert ctr.env[0].value_from.secret_key_ref.name == _env_example()["HF_TOKEN_SECRET"]
    shm = next(v for v in pod.volumes if v.name == "dshm")
    assert shm.empty_dir.medium == "Memory"
    assert {m.mount_path for m in ctr.volume_mounts} == {"/dev/shm", "/models"}


def test_vllm_statefulset_and_deployment_run_the_same_container() -> None:
    (sts,) = render_vllm("statefulset.yaml")
    (dep,) = render_vllm("deployment.yaml")
    assert sts["spec"]["template"]["spec"]["containers"] == dep["spec"]["template"]["spec"]["containers"]
    sts_cache = to_model(sts).spec.volume_claim_templates[0]
    assert sts_cache.metadata.name == "model-cache"
    (pvc,) = render_vllm("pvc.yaml")
    dep_cache = next(v for v in dep["spec"]["template"]["spec"]["volumes"] if v["name"] == "model-cache")
    assert dep_cache["persistentVolumeClaim"]["claimName"] == to_model(pvc).metadata.name
    assert to_model(pvc).spec.access_modes == ["ReadWriteMany"]


def test_vllm_services_headless_and_clusterip() -> None:
    headless, cluster = (to_model(d) for d in render_vllm("service.yaml"))
    (sts,) = render_vllm("statefulset.yaml")
    assert headless.spec.cluster_ip == "None" and headless.metadata.name == sts["spec"]["serviceName"]
    assert cluster.spec.type == "ClusterIP"
    for svc in (headless, cluster):
        assert svc.spec.selector == sts["spec"]["selector"]["matchLabels"]
        assert [(p.port, p.target_port) for p in svc.spec.ports] == [(8000, "http")]


def test_vllm_network_policy_admits_the_gateway_on_the_service_port() -> None:
    (doc,) = render_vllm("networkpolicy.yaml")
    (sts,) = render_vllm("statefulset.yaml")
    policy = to_model(doc)
    assert policy.spec.pod_selector.match_labels == sts["spec"]["selector"]["matchLabels"]
    (rule,) = policy.spec.ingress
    assert [p.port for p in rule.ports] == ["http"]
    assert rule._from[0].pod_selector.match_labels == {"app.kubernetes.io/name": "llmops"}  # the chart's name label


def test_vllm_hpa_scales_the_deployment_on_the_adapter_metric() -> None:
    (hpa_doc,) = render_vllm("hpa.yaml")
    (dep,) = render_vllm("deployment.yaml")
    hpa = to_model(hpa_doc)
    assert (hpa.spec.scale_target_ref.kind, hpa.spec.scale_target_ref.name) == ("Deployment", dep["metadata"]["name"])
    (metric,) = hpa.spec.metrics
    adapter = yaml.safe_load((DEPLOY / "prometheus" / "prometheus-adapter.values.yaml").read_text())
    served = {rule["name"]["as"]: rule["seriesQuery"] for rule in adapter["rules"]["custom"]}
    assert metric.pods.metric.name in served
    assert served[metric.pods.metric.name].startswith("vllm:num_requests_waiting{")
    assert served["llmops_inflight_requests"].startswith("llmops_inflight_requests{")


def test_vllm_route_example_decodes_and_points_at_the_replicas() -> None:
    env = _env_example()
    (raw,) = render_vllm("llmops-route.example.yaml")
    cfg = decode_config(raw, env={})
    (provider,) = cfg.providers
    (sts,) = render_vllm("statefulset.yaml")
    name, ns, headless = sts["metadata"]["name"], sts["metadata"]["namespace"], sts["spec"]["serviceName"]
    assert provider.balance == "vllm_queue"
    assert provider.urls() == [
        f"http://{name}-{i}.{headless}.{ns}.svc.cluster.local:8000/v1" for i in range(sts["spec"]["replicas"])
    ]
    (route,) = cfg.routes
    assert route.targets[0].provider == provider.name and route.targets[0].model == env["SERVED_MODEL_NAME"]
    assert f"--served-model-name={env['SERVED_MODEL_NAME']}" in sts["spec"]["template"]["spec"]["containers"][0]["args"]


# --- metrics, dashboard and alert rules -------------------------------------------------

def test_metric_list_matches_the_gateway() -> None:
    metrics = GatewayMetrics()
    WriterMetrics(metrics)  # registers the usage writer's series beside the gateway's
    exported = set()
    for family in metrics.registry.collect():
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"], "gauge": [""]}[family.type]
        exported |= {family.name + s for s in suffixes}
    assert exported == LLMOPS_METRICS


_BUILTIN_VARIABLES = {"__rate_interval", "__range", "__interval"}
_VARIABLE = re.compile(r"\$(?:\{)?(\w+)")


def _panels(dash: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in dash["panels"] if p["type"] != "row"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_panels_have_datasource_and_known_metrics(path: Path) -> None:
    dash = json.loads(path.read_text())
    assert dash["schemaVersion"] >= 36 and dash["uid"]
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    panels = _panels(dash)
    assert len({p["id"] for p in dash["panels"]}) == len(dash["panels"])
    cells: set[tuple[int, int]] = set()
    for p in dash["panels"]:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, p["title"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & mine, f"{p['title']} overlaps another panel"
        cells |= mine
    for p in panels:
        assert p["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}, p["title"]
        assert p["targets"], p["title"]
        assert all(t["expr"] and t["datasource"] == p["datasource"] for t in p["targets"]), p["title"]
    queries = [v["query"]["query"] for v in variables.values() if v["type"] == "query"]
    exprs = "\n".join([*(t["expr"] for p in panels for t in p["targets"]), *queries])
    llmops, vllm = _metric_names(exprs)
    assert llmops <= LLMOPS_METRICS, llmops - LLMOPS_METRICS
    assert vllm <= VLLM_METRICS, vllm - VLLM_METRICS
    assert set(_VARIABLE.findall(exprs)) - _BUILTIN_VARIABLES <= variables.keys()
    for kinds in re.findall(r'kind=~?"([^"]+)"', exprs):
        assert set(kinds.split("|")) <= set(TOKEN_KINDS), kinds


def test_dashboards_have_distinct_uids() -> None:
    uids = [json.loads(p.read_text())["uid"] for p in DASHBOARDS]
    assert len(DASHBOARDS) >= 2 and len(set(uids)) == len(uids)


def test_gateway_dashboard_shows_traffic_latency_and_upstreams() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert {"route", "provider"} <= {v["name"] for v in dash["templating"]["list"]}
    panels = _panels(dash)
    assert len(panels) >= 14
    llmops, vllm = _metric_names("\n".join(t["expr"] for p in panels for t in p["targets"]))
    # Everything the brief asks the dashboard to show is on it.
    for needed in ("llmops_requests_total", "llmops_request_latency_seconds_bucket", "llmops_tokens_total",
                   "llmops_time_to_first_token_seconds_bucket", "llmops_upstream_errors_total",
                   "llmops_retries_total", "llmops_inflight_requests", "llmops_circuit_state"):
        assert needed in llmops
    assert {"vllm:num_requests_waiting", "vllm:num_requests_running", "vllm:kv_cache_usage_perc"} <= vllm


def test_usage_dashboard_shows_cost_by_team_and_model_variants_and_the_pipeline() -> None:
    dash = json.loads(USAGE_DASHBOARD.read_text())
    assert {"route", "model", "provider", "team"} <= {v["name"] for v in dash["templating"]["list"]}
    exprs = {p["title"]: "\n".join(t["expr"] for t in p["targets"]) for p in _panels(dash)}
    everything = "\n".join(exprs.values())
    assert {n for n in LLMOPS_METRICS if n.startswith(("llmops_variant_", "llmops_usage_", "llmops_cost_"))
            and not n.endswith(("_count", "_sum"))} <= _metric_names(everything)[0]
    assert any("llmops_cost_usd_total" in e and "by (team)" in e for e in exprs.values())
    assert any("llmops_cost_usd_total" in e and "by (model)" in e for e in exprs.values())
    assert any("llmops_tokens_total" in e and "by (kind)" in e for e in exprs.values())
    assert sum("by (route, variant" in e for e in exprs.values()) >= 4


def test_alert_rules_cover_the_failure_modes_and_name_known_metrics() -> None:
    text = RULES.read_text()
    rules = [r for g in yaml.safe_load(text)["groups"] for r in g["rules"]]
    alerts = {r["alert"] for r in rules if "alert" in r}
    assert {"LLMOpsGatewayDown", "LLMOpsHigh5xxRatio", "LLMOpsLatencySLOBurnFast", "LLMOpsTimeToFirstTokenHigh",
            "LLMOpsCircuitOpen", "LLMOpsUpstreamErrorsSpike", "LLMOpsUsageRecordsDropped",
            "LLMOpsConfigReloadFailed", "VLLMQueueBackedUp", "LLMOpsCostAnomaly", "LLMOpsUsageWriterBacklog",
            "LLMOpsUsageSpillGrowing", "LLMOpsUnpricedUsage"} <= alerts
    assert all(r["labels"]["severity"] in {"critical", "warning", "info"} for r in rules if "alert" in r)
    llmops, vllm = _metric_names(text)
    assert llmops <= LLMOPS_METRICS, llmops - LLMOPS_METRICS
    assert vllm <= VLLM_METRICS, vllm - VLLM_METRICS


def test_rules_bucket_bounds_are_ones_the_gateway_exposes() -> None:
    """`le="30.0"` in a rule only matches if the gateway writes bounds the same way (Prometheus 2
    compares label strings; the single-process exposition once wrote `30`)."""
    from prometheus_client import generate_latest

    from adapters.usage import UsageRecord

    metrics = GatewayMetrics()
    metrics.stats.observe_many([UsageRecord(request_id="x", route="r", provider="p", model="m", stream=True,
                                            status=200, latency_s=1.0, ttft_s=0.5)])
    exposed = set(re.findall(r'_bucket\{le="([^"]+)"', generate_latest(metrics.registry).decode()))
    used = set(re.findall(r'le="([^"]+)"', RULES.read_text()))
    assert used and used <= exposed, used - exposed


def test_rule_copies_are_identical() -> None:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    wrapper = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yaml").read_text())
    assert wrapper["kind"] == "PrometheusRule" and wrapper["spec"]["groups"] == groups, "regenerate alerts.yaml"
    assert (CHART / "files" / "llmops-rules.yaml").read_bytes() == RULES.read_bytes(), "copy the rules into the chart"


def test_promtool_checks_rules_unit_tests_and_dashboard_queries(tmp_path: Path) -> None:
    assert shutil.which("promtool"), "promtool is missing: ./dev test installs it (Debian package prometheus)"

    def promtool(*args: str) -> None:
        done = subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=30, cwd=RULES.parent)
        assert done.returncode == 0, done.stdout + done.stderr

    promtool("check", "rules", RULES.name)
    tests = sorted(p.relative_to(RULES.parent).as_posix() for p in (RULES.parent / "tests").glob("*.test.yaml"))
    assert len(tests) >= 2
    promtool("test", "rules", *tests)
    # Dashboard queries as recording rules, Grafana's variables replaced: a PromQL syntax check.
    exprs = [t["expr"] for path in DASHBOARDS for p in json.loads(path.read_text())["panels"]
             for t in p.get("targets", [])]
    subst = {"$__rate_interval": "5m", "$__range": "1d", "$route": ".*", "$provider": ".*", "$vllm_pod": ".*",
             "$model": ".*", "$team": ".*"}
    rules = [{"record": f"dashboard:q{i}", "expr": re.sub("|".join(map(re.escape, subst)), lambda m: subst[m[0]], e)}
             for i, e in enumerate(exprs)]
    assert not [r["expr"] for r in rules if "$" in r["expr"]]
    (tmp_path / "dash.yaml").write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    promtool("check", "rules", str(tmp_path / "dash.yaml"))


# --- Dockerfile ----------------------------------------------------------------------

def test_dockerfile_copies_every_package_and_runs_as_non_root() -> None:
    text = (DEPLOY / "docker" / "Dockerfile").read_text()
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["hatch"]["build"]["targets"]["wheel"]
    ignore = (DEPLOY / "docker" / "Dockerfile.dockerignore").read_text()
    for pkg in packages["packages"]:
        assert f"COPY {pkg}/ {pkg}/" in text and f"!{pkg}/" in ignore, pkg
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in text and "ARG EXTRAS=providers\n" in text
    # every dependency from uv.lock with its hashes, the project itself without dependencies
    assert "uv export --quiet --frozen --no-dev --no-emit-project" in text and "!uv.lock" in ignore
    assert "pip install --require-hashes --no-deps -r /tmp/requirements.txt" in text
    assert "pip install --no-deps ." in text and 'pip install ".[' not in text
    assert re.search(r"^USER 10001:10001$", text, re.M) and re.search(r"^EXPOSE 4000$", text, re.M)
    assert not re.search(r"^HEALTHCHECK", text, re.M)
    assert 'CMD ["serve", "--config", "/etc/llmops/config.yaml", "--host", "0.0.0.0", "--port", "4000"]' in text


def test_trainer_dockerfile_installs_the_locked_train_extra_with_hashes() -> None:
    text = (DEPLOY / "docker" / "Dockerfile.trainer").read_text()
    ignore = (DEPLOY / "docker" / "Dockerfile.trainer.dockerignore").read_text()
    assert "uv export --quiet --frozen --no-dev --no-emit-project --extra train" in text
    assert "pip install --require-hashes --no-deps -r /tmp/requirements.txt" in text
    assert "pip install --require-hashes --no-deps -r tools/uv.txt" in text
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["hatch"]["build"]["targets"]["wheel"]
    for pkg in packages["packages"]:
        assert f"COPY {pkg}/ {pkg}/" in text and f"!{pkg}/" in ignore, pkg
    for needed in ("!uv.lock", "!tools/uv.txt", "!pyproject.toml"):
        assert needed in ignore
    assert re.search(r"^USER 10001:10001$", text, re.M)
    assert 'CMD ["python", "-m", "adapters.training.trainer.hf"]' in text
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert {"torch", "transformers", "trl"} <= {re.split(r"[<>=\[]", d)[0] for d in extras["train"]}


# --- Helm chart ----------------------------------------------------------------------

def _values() -> dict[str, Any]:
    return yaml.safe_load((CHART / "values.yaml").read_text())


def test_every_values_reference_in_templates_exists() -> None:
    values = _values()
    sources = [p.read_text() for p in (CHART / "templates").iterdir()]
    referenced = {m for s in sources for m in re.findall(r"\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)", s)}
    assert len(referenced) > 40
    for ref in sorted(referenced):
        node: Any = values
        for key in ref.strip(".").split("."):
            assert isinstance(node, dict) and key in node, f".Values{ref} is not in values.yaml"
            node = node[key]
    used_top = {ref.split(".")[1] for ref in referenced}
    assert set(values) - used_top == set(), "values.yaml keys no template reads"


@pytest.mark.parametrize("values_file", [None, "llmops-production.values.yaml"])
def test_chart_values_config_decodes(values_file: str | None) -> None:
    values = yaml.safe_load((DEPLOY / "helm" / values_file).read_text()) if values_file else _values()
    decode_config(values["config"], env={"OPENAI_API_KEY": "sk-test"})


Rendered = dict[str, dict[str, list[dict[str, Any]]]]


@pytest.fixture(scope="module")
def rendered() -> Rendered:
    """Each values set of rendering.CHART_VALUES rendered once: docs by kind."""
    out: Rendered = {}
    for values_name, values in CHART_VALUES.items():
        by_kind = out.setdefault(values_name, {})
        for _, doc in render_chart(values):
            by_kind.setdefault(doc["kind"], []).append(doc)
    return out


def test_chart_defaults_render_a_hardened_single_replica(rendered: Rendered) -> None:
    docs = rendered["defaults"]
    assert set(docs) == {"ConfigMap", "Deployment", "Service", "ServiceAccount"}
    (dep,) = (to_model(d) for d in docs["Deployment"])
    pod = dep.spec.template.spec
    (ctr,) = pod.containers
    assert dep.spec.replicas == 1 and pod.security_context.run_as_non_root
    assert ctr.security_context.read_only_root_filesystem and ctr.security_context.capabilities.drop == ["ALL"]
    assert (ctr.liveness_probe.http_get.path, ctr.readiness_probe.http_get.path) == ("/healthz", "/readyz")
    assert ctr.ports[0].container_port == 4000 and ctr.args[:3] == ["serve", "--config", "/etc/llmops/config.yaml"]
    mounts = {m.mount_path: m.name for m in ctr.volume_mounts}
    volumes = {v.name: v for v in pod.volumes}
    assert volumes[mounts["/tmp"]].empty_dir is not None and volumes[mounts["/var/lib/llmops"]].empty_dir is not None
    assert "checksum/config" in dep.spec.template.metadata.annotations
    (cm,) = (to_model(d) for d in docs["ConfigMap"])
    cfg = decode_config(yaml.safe_load(cm.data["config.yaml"]), env={})
    assert cfg.control.data_dir == "/var/lib/llmops" and cfg.control.auto_migrate


def test_chart_production_values_render_valid_objects(rendered: Rendered) -> None:
    docs = rendered["production"]
    assert {"HorizontalPodAutoscaler", "PodDisruptionBudget", "Ingress", "NetworkPolicy", "Job", "Secret",
            "ServiceMonitor", "PrometheusRule"} <= set(docs)
    models = {kind: [to_model(d) for d in ds] for kind, ds in docs.items() if kind not in _CRD_KINDS}
    (hpa,) = models["HorizontalPodAutoscaler"]
    assert {m.type for m in hpa.spec.metrics} == {"Resource", "Pods"}
    assert next(m for m in hpa.spec.metrics if m.type == "Pods").pods.metric.name == "llmops_inflight_requests"
    (job,) = models["Job"]
    assert job.metadata.annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert job.spec.template.spec.containers[0].args[0] == "migrate"
    assert job.spec.template.spec.containers[0].env[0].name == "LLMOPS_DATABASE_URL"
    (dep,) = models["Deployment"]
    assert dep.spec.replicas is None  # the HPA owns it
    assert [c.name for c in dep.spec.template.spec.containers] == ["gateway", "config-reloader"]
    assert "checksum/config" not in dep.spec.template.metadata.annotations  # reloaded in place
    env = {e.name for e in dep.spec.template.spec.containers[0].env}
    assert {"LLMOPS_DATABASE_URL", "LLMOPS_ADMIN_KEY", "LLMOPS_REDIS_URL"} <= env
    (cm,) = models["ConfigMap"]
    cfg = decode_config(yaml.safe_load(cm.data["config.yaml"]), env={"OPENAI_API_KEY": "sk-test"})
    assert cfg.control.auto_migrate is False  # the hook Job migrates
    assert "reload-watch.py" in cm.data
    (rule,) = docs["PrometheusRule"]
    assert rule["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]
    (monitor,) = docs["ServiceMonitor"]
    assert monitor["spec"]["endpoints"][0] == {"port": "http", "path": "/metrics", "interval": "15s",
                                               "scrapeTimeout": "10s"}


def test_chart_database_url_reaches_the_hook_job_through_a_hook_secret(rendered: Rendered) -> None:
    docs = rendered["external-db"]
    hook_secret = next(s for s in docs["Secret"] if "helm.sh/hook" in s["metadata"].get("annotations", {}))
    assert int(hook_secret["metadata"]["annotations"]["helm.sh/hook-weight"]) < 0
    (job,) = docs["Job"]
    ref = job["spec"]["template"]["spec"]["containers"][0]["env"][0]["valueFrom"]["secretKeyRef"]
    assert ref["name"] == hook_secret["metadata"]["name"] and ref["key"] in hook_secret["stringData"]
    assert "PodDisruptionBudget" in docs and docs["Deployment"][0]["spec"]["strategy"]["type"] == "RollingUpdate"


@pytest.mark.parametrize(("values", "message"), [
    ({"replicaCount": 2}, "external database"),
    ({"autoscaling": {"enabled": True}}, "external database"),
    ({"configReloader": {"enabled": True}}, "admin key"),
    ({"database": {"url": "postgresql://x"}, "autoscaling": {"enabled": True, "targetCPUUtilizationPercentage": None}},
     "targetInflightPerPod"),
])
def test_chart_refuses_unworkable_values(values: dict[str, Any], message: str) -> None:
    with helm.Chart.load(str(CHART)) as chart, pytest.raises(helm.HelmError, match=message):
        chart.render(values, name="llmops", namespace="llm")


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("values_name", CHART_VALUES)
def test_chart_lints_clean(values_name: str, kube_version: str) -> None:
    result = helm.lint(str(CHART), CHART_VALUES[values_name], strict=True, kube_version=f"v{kube_version}.0")
    assert result["errors"] == [], result
    assert all(m["severity"] < 2 for m in result["messages"]), result  # info only: no warnings

