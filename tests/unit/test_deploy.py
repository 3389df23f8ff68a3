"""The deployment files: the Kubernetes manifests validate against Kubernetes's own OpenAPI
schemas (kubernetes-validate ships them, strict: unknown fields fail), the DaemonSet asks only
for what the exporter needs, and promtool accepts the scrape job."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "kubernetes"
KUBERNETES = "1.30.0"  # the oldest release the manifests promise to fit


def documents(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((DEPLOY / name).read_text()) if d]


def test_manifests_are_valid_kubernetes_objects() -> None:
    objects = documents("daemonset.yaml")
    assert {o["kind"] for o in objects} == {"Namespace", "ServiceAccount", "DaemonSet", "Service"}
    for version in (KUBERNETES, kubernetes_validate.latest_version()):
        for obj in objects:
            kubernetes_validate.validate(obj, version, strict=True)


def test_a_broken_manifest_is_caught() -> None:
    daemonset = next(o for o in documents("daemonset.yaml") if o["kind"] == "DaemonSet")
    daemonset["spec"]["template"]["spec"]["hostPid"] = True  # misspelt
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(daemonset, KUBERNETES, strict=True)


def test_the_daemonset_asks_only_for_what_it_needs() -> None:
    daemonset = next(o for o in documents("daemonset.yaml") if o["kind"] == "DaemonSet")
    pod = daemonset["spec"]["template"]["spec"]
    assert pod["hostPID"] is True and pod["hostNetwork"] is True
    (container,) = pod["containers"]
    security = container["securityContext"]
    assert security["privileged"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"], "add": ["SYS_PTRACE", "NET_ADMIN"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert {"/sys/fs/cgroup", "/run/containerd"} <= set(mounts)
    assert all(m["readOnly"] for m in mounts.values())
    assert container["args"][0] == "export"
    assert any(a.startswith("--listen=$(NODE_IP):") for a in container["args"])
    namespace = next(o for o in documents("daemonset.yaml") if o["kind"] == "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"


def test_promtool_accepts_the_scrape_job(tmp_path: Path) -> None:
    if shutil.which("promtool") is None:
        pytest.skip("needs promtool (apt-get install prometheus)")
    config = yaml.safe_load((DEPLOY / "prometheus-scrape.yaml").read_text())
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    check = subprocess.run(
        ["promtool", "check", "config", str(path)], capture_output=True, text=True
    )
    if check.returncode != 0 and "kubernetes_sd_configs not found" in check.stdout + check.stderr:
        # Debian builds Prometheus without Kubernetes discovery: check everything else of the
        # job (relabelling, intervals, honor_labels) with the discovery swapped for a static
        # target, and the discovery block against the fields Prometheus documents
        (job,) = config["scrape_configs"]
        (sd,) = job.pop("kubernetes_sd_configs")
        assert set(sd) <= {"role", "namespaces", "selectors", "api_server", "attach_metadata"}
        assert sd["role"] in {"node", "service", "pod", "endpoints", "endpointslice", "ingress"}
        job["static_configs"] = [{"targets": ["127.0.0.1:9717"]}]
        path.write_text(yaml.safe_dump(config))
        check = subprocess.run(
            ["promtool", "check", "config", str(path)], capture_output=True, text=True
        )
    assert check.returncode == 0, check.stdout + check.stderr


def test_the_containerfile_installs_this_package() -> None:
    text = (ROOT / "Containerfile").read_text()
    assert "pip install --no-cache-dir ." in text
    assert 'ENTRYPOINT ["pidns"]' in text
