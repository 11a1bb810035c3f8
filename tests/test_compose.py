"""docker-compose.yml: the single server (default profile) and the three-node cluster profile.

With ``docker compose`` present, ``docker compose --profile cluster config`` must accept the
file; in any case the parsed file is checked: the services and their profiles, every port
bound to loopback, the p2p port kept internal, the cluster commands, one volume per node,
and image versions within the pinned qdrant-client's minor version.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
NODES = ("qdrant-node1", "qdrant-node2", "qdrant-node3")
P2P = "http://qdrant-node1:6335"


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))["services"]


def _client_minor() -> str:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    pin = next(d for d in deps["dependencies"] if d.startswith("qdrant-client"))
    match = re.fullmatch(r"qdrant-client==(\d+)\.(\d+)\.\d+", pin)
    assert match, f"qdrant-client is not pinned exactly: {pin}"
    return f"{match.group(1)}.{match.group(2)}"


def _has_compose() -> bool:
    if shutil.which("docker") is None:
        return False
    probe = subprocess.run(
        ["docker", "compose", "version"], capture_output=True, text=True, check=False
    )
    return probe.returncode == 0


@pytest.mark.skipif(not _has_compose(), reason="no `docker compose` on this machine")
def test_docker_compose_accepts_the_cluster_profile() -> None:
    result = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE), "--profile", "cluster", "config", "--quiet"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_single_server_is_the_default_profile_and_nodes_the_cluster_profile(
    services: dict[str, Any],
) -> None:
    assert set(services) == {"qdrant", *NODES}
    assert "profiles" not in services["qdrant"]
    assert services["qdrant"]["ports"][0] == "127.0.0.1:6333:6333"
    for node in NODES:
        assert services[node]["profiles"] == ["cluster"]
        env = services[node]["environment"]
        assert env["QDRANT__CLUSTER__ENABLED"] == "true"
        assert env["QDRANT__CLUSTER__P2P__PORT"] == "6335"


def test_every_port_is_on_loopback_distinct_and_p2p_stays_internal(
    services: dict[str, Any],
) -> None:
    host_ports = []
    for name, service in services.items():
        for port in service.get("ports", []):
            host, host_port, container_port = str(port).split(":")
            assert host == "127.0.0.1", f"{name} publishes {port} beyond loopback"
            assert container_port != "6335", f"{name} publishes the p2p port"
            host_ports.append(host_port)
    assert len(host_ports) == len(set(host_ports))
    assert "127.0.0.1:6343:6333" in services["qdrant-node1"]["ports"]


def test_first_node_starts_the_cluster_and_the_others_join_it(services: dict[str, Any]) -> None:
    assert services["qdrant-node1"]["command"] == ["./qdrant", "--uri", P2P]
    for i, node in enumerate(NODES[1:], start=2):
        command = services[node]["command"]
        assert command[:3] == ["./qdrant", "--bootstrap", P2P]
        assert command[3:] == ["--uri", f"http://qdrant-node{i}:6335"]
        assert services[node]["depends_on"]["qdrant-node1"]["condition"] == "service_healthy"


def test_each_node_has_its_own_declared_volume(services: dict[str, Any]) -> None:
    declared = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))["volumes"]
    mounts = []
    for name, service in services.items():
        (volume,) = service["volumes"]
        source, target = volume.split(":")
        assert target == "/qdrant/storage", name
        assert source in declared
        mounts.append(source)
    assert len(set(mounts)) == len(services)


def test_images_match_the_pinned_client_minor_version(services: dict[str, Any]) -> None:
    minor = _client_minor()
    for name, service in services.items():
        match = re.fullmatch(r"qdrant/qdrant:v(\d+\.\d+)\.\d+", service["image"])
        assert match, f"{name}: image {service['image']} is not pinned to a version"
        assert match.group(1) == minor, f"{name}: {service['image']} vs qdrant-client {minor}"
