"""One process table, no drift: ``make run`` (deploy/local.py), the compose file and both
Kubernetes overlays run exactly the processes of ``deploy/processes.py``.

No container engine or cluster runs here: compose is read as YAML and the overlays are
rendered with ``kubectl kustomize``, then cross-checked with the table."""
from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
import yaml

from deploy import manifests
from deploy.processes import BY_NAME, HTTP, JOB, PROCESSES, URL_SETTING, WORKER
from shared.config import PROJECT_ROOT

DEPLOY = PROJECT_ROOT / "deploy"
TABLE = {process.name for process in PROCESSES}
# What a deployment runs besides the platform's own processes.
COMPOSE_BACKING = {"mariadb", "redis", "comfyui-emulator", "comfyui"}
K8S_BACKING = {"dev": {"mariadb", "redis"}, "production": set()}
WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet", "Job")


def test_the_generated_kubernetes_processes_are_up_to_date():
    result = subprocess.run([sys.executable, "-m", "deploy.manifests", "--check"], cwd=PROJECT_ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_make_run_starts_every_process_of_the_table(settings):
    from deploy.local import service_commands

    commands = service_commands(settings)
    assert set(commands) == {p.name for p in PROCESSES if p.kind != JOB}  # migrate runs in prepare()
    for process in PROCESSES:
        if process.kind == HTTP:
            assert process.target in commands[process.name]
            assert "python:deploy.gunicorn_conf" in commands[process.name]
        elif process.kind != JOB:
            assert commands[process.name][1:3] == ["-m", process.target]


def _compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))


def test_compose_runs_every_process_of_the_table_and_nothing_else():
    services = _compose()["services"]
    runs: dict[str, set[str]] = {}
    for name, service in services.items():
        command = service.get("command") or []
        if service.get("entrypoint") is None and command and command[0] in BY_NAME:
            runs.setdefault(command[0], set()).add(name)
        else:
            assert name in COMPOSE_BACKING, f"compose service {name} runs no process of the table"
    assert set(runs) == TABLE
    for name, services_of in runs.items():
        process = BY_NAME[name]
        for service_name in services_of:
            environment = services[service_name].get("environment") or {}
            for setting in process.needed_env:
                if setting in URL_SETTING.values():
                    assert setting in environment, f"{service_name} lacks {setting}"
            if process.kind == JOB:
                assert services[service_name]["restart"] == "no"
            else:
                assert "migrate" in services[service_name]["depends_on"], f"{service_name} starts before migrations"


def test_compose_gpu_profile_reserves_a_gpu_for_real_comfyui():
    services = _compose()["services"]
    devices = services["comfyui"]["deploy"]["resources"]["reservations"]["devices"]
    assert services["comfyui"]["profiles"] == ["gpu"] and devices[0]["capabilities"] == ["gpu"]
    assert services["worker-gpu"]["command"][:3] == ["worker", "--comfyui", "http://comfyui:8188"]


@pytest.fixture(scope="module", params=["dev", "production"])
def overlay(request) -> tuple[str, list[dict]]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl (with kustomize) is needed to render deploy/k8s"
    result = subprocess.run([kubectl, "kustomize", str(DEPLOY / "k8s" / "overlays" / request.param)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return request.param, [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def _by_kind(docs: list[dict], kind: str) -> dict[str, dict]:
    return {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == kind}


def test_each_overlay_runs_every_process_of_the_table_and_nothing_else(overlay):
    name, docs = overlay
    workloads = {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] in WORKLOADS}
    assert set(workloads) == TABLE | K8S_BACKING[name]
    for process in PROCESSES:
        workload = workloads[process.name]
        assert workload["kind"] == ("Job" if process.kind == JOB else "Deployment")
        containers = {c["name"]: c for c in workload["spec"]["template"]["spec"]["containers"]}
        assert containers[process.name]["args"][0] == process.name
        assert workload["spec"]["template"]["spec"]["enableServiceLinks"] is False


def test_http_processes_have_probes_a_service_and_a_disruption_budget(overlay):
    _, docs = overlay
    deployments, services = _by_kind(docs, "Deployment"), _by_kind(docs, "Service")
    budgets = _by_kind(docs, "PodDisruptionBudget")
    for process in PROCESSES:
        if process.kind != HTTP:
            continue
        container = deployments[process.name]["spec"]["template"]["spec"]["containers"][0]
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["resources"]["requests"]
        assert services[process.name]["spec"]["ports"][0]["port"] == process.port
        assert process.name in budgets


def test_only_the_gateway_is_reachable_and_services_accept_their_callers(overlay):
    _, docs = overlay
    policies = _by_kind(docs, "NetworkPolicy")
    assert policies["default-deny-ingress"]["spec"]["podSelector"] == {}
    ingress = _by_kind(docs, "Ingress")["aigc"]
    backends = {path["backend"]["service"]["name"] for rule in ingress["spec"]["rules"]
                for path in rule["http"]["paths"]}
    assert backends == {"gateway"}
    assert "from" not in policies["allow-gateway"]["spec"]["ingress"][0]
    for process in PROCESSES:
        if process.kind == HTTP and process.name != "gateway":
            allowed = {peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
                       for rule in policies[f"allow-{process.name}"]["spec"]["ingress"]
                       for peer in rule.get("from", []) if "podSelector" in peer}
            assert allowed == {caller.name for caller in PROCESSES if process.name in caller.calls}


def test_render_workers_pair_comfyui_on_one_gpu_and_scale_on_queue_length(overlay):
    name, docs = overlay
    pod = _by_kind(docs, "Deployment")["worker"]["spec"]["template"]["spec"]
    containers = {c["name"]: c for c in pod["containers"]}
    assert set(containers) == {"comfyui", "worker"}
    assert containers["worker"]["args"][:3] == ["worker", "--comfyui", "http://127.0.0.1:8188"]
    scaled = _by_kind(docs, "ScaledObject")
    if name == "production":
        assert containers["comfyui"]["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert pod["nodeSelector"] and pod["tolerations"]
        queues = {trigger["metadata"]["listName"] for trigger in scaled["worker"]["spec"]["triggers"]}
        from services.render.workflows import TemplateStore
        assert queues == {f"render.{name}" for name in TemplateStore().all()}  # one per workflow
    else:  # the emulator stands in: no GPU, any node, a fixed worker
        assert "nvidia.com/gpu" not in containers["comfyui"]["resources"].get("limits", {})
        assert "nodeSelector" not in pod and not scaled
    assert any(p.kind == WORKER for p in PROCESSES)


def test_the_generator_covers_every_kind():
    assert {doc["kind"] for doc in manifests.documents()} >= {"Deployment", "Job", "Service",
                                                            "PodDisruptionBudget", "NetworkPolicy"}
