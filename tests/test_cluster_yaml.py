"""Offline checks of the Ray cluster launcher YAMLs (cluster.yaml, cluster-local.yaml).

No network and no credentials: defaults are filled in with
``ray.autoscaler.sdk.fillout_defaults`` and the result is validated against the
JSON schema shipped in the installed ray wheel. ``bootstrap_config`` is never
called (it would talk to AWS).
"""

from __future__ import annotations

import ast
import copy
import ipaddress
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

import ray.autoscaler
from ray.autoscaler.sdk import fillout_defaults

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG_FILES = ["cluster.yaml", "cluster-local.yaml"]

IMAGE_RE = re.compile(r"^rayproject/ray:[\w.]+(-py\d+)?-(gpu|cu\d+)$")


@pytest.fixture(scope="module")
def schema() -> dict:
    path = Path(ray.autoscaler.__file__).parent / "ray-schema.json"
    return json.loads(path.read_text())


def _load(name: str) -> dict:
    with open(REPO_ROOT / name) as f:
        cfg = yaml.safe_load(f)
    assert isinstance(cfg, dict), f"{name} is not a YAML mapping"
    return cfg


def _filled(name: str) -> dict:
    return fillout_defaults(copy.deepcopy(_load(name)))


def _repo_mount(cfg: dict) -> str:
    """Remote path that the repository root (".") is mounted at."""
    remotes = [r for r, local in cfg.get("file_mounts", {}).items() if local in (".", "./")]
    assert len(remotes) == 1, f"expected exactly one file mount of '.', got {remotes}"
    return remotes[0].rstrip("/")


@pytest.mark.parametrize("name", CONFIG_FILES)
def test_schema_valid_after_fillout(name, schema):
    cfg = _filled(name)
    jsonschema.validate(cfg, schema)
    assert cfg["cluster_name"] == "raydistill"

    # The extra checks ray's validate_config runs after the schema. The local
    # provider only gets its node type later (prepare_local), so skip it there.
    node_types = cfg.get("available_node_types")
    if node_types:
        assert cfg["head_node_type"] in node_types
        assert sum(t.get("min_workers", 0) for t in node_types.values()) <= cfg["max_workers"]
        for t in node_types.values():
            assert t.get("max_workers", 0) <= cfg["max_workers"]
            assert all(isinstance(v, int) for v in t["resources"].values())


@pytest.mark.parametrize("name", CONFIG_FILES)
def test_prepare_config_like_ray_up(name):
    """The offline part of `ray up`: prepare_config, then validate_config.

    Private API: skipped if a future Ray moves it.
    """
    try:
        from ray.autoscaler._private.util import prepare_config, validate_config
    except ImportError:  # pragma: no cover
        pytest.skip("ray.autoscaler._private.util moved")
    cfg = prepare_config(copy.deepcopy(_load(name)))
    validate_config(cfg)
    assert cfg["head_node_type"] in cfg["available_node_types"]
    if cfg["provider"]["type"] == "local":
        (node,) = cfg["available_node_types"].values()
        n_ips = len(cfg["provider"]["worker_ips"])
        assert node["min_workers"] == node["max_workers"] == n_ips


@pytest.mark.parametrize("name", CONFIG_FILES)
def test_typo_in_top_level_key_fails_validation(name, schema):
    raw = _load(name)
    raw["max_worker"] = raw.pop("max_workers")
    cfg = fillout_defaults(raw)
    with pytest.raises(jsonschema.ValidationError, match="max_worker"):
        jsonschema.validate(cfg, schema)


@pytest.mark.parametrize("name", CONFIG_FILES)
def test_docker_image_is_gpu_ray_image(name):
    docker = _load(name)["docker"]
    for key in ("image", "head_image", "worker_image"):
        if key in docker:
            image = docker[key]
            assert "ray-ml" not in image, f"{key}: rayproject/ray-ml is deprecated"
            assert IMAGE_RE.match(image), f"{key}: {image!r} is not a rayproject/ray GPU tag"
    assert "image" in docker and docker.get("container_name")


@pytest.mark.parametrize("name", CONFIG_FILES)
def test_head_starts_our_tracking_server_on_a_private_address(name):
    cmds = _filled(name)["head_start_ray_commands"]
    server_idx = [i for i, c in enumerate(cmds) if "raydistill.tracking_server" in c]
    assert len(server_idx) == 1, cmds
    assert not any("mlflow server" in c for c in cmds), "start MLflow only through raydistill.tracking_server"
    argv = shlex.split(" ".join(cmds[server_idx[0]].split()))
    assert argv[:3] == ["nohup", "python", "-m"] and argv[-1] == "&", "must run in the background"
    assert re.fullmatch(r"/home/ray/\S+", _option(argv, "--root")), "store on the head's local disk"
    assert _option(argv, "--port") == "5000"
    assert {a for a in argv if a.startswith("--")} == {"--host", "--port", "--root"}
    # The address Ray advertises for the head: its private IP, never every interface.
    assert _option(argv, "--host") == "$(python -c 'import ray.util; print(ray.util.get_node_ip_address())')"
    ray_head_idx = [i for i, c in enumerate(cmds) if "ray start --head" in c]
    assert ray_head_idx and ray_head_idx[0] > server_idx[0]
    assert cmds[0].strip() == "ray stop"


def test_tracking_server_host_substitution_gives_an_address():
    """The shell substitution the cluster files pass as --host, run here with this Python."""
    cmd = next(c for c in _load("cluster.yaml")["head_start_ray_commands"] if "tracking_server" in c)
    host = _option(shlex.split(" ".join(cmd.split())), "--host")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    out = subprocess.run(["bash", "-c", f'echo "{host}"'], env=env, capture_output=True, text=True, timeout=120)
    address = ipaddress.ip_address(out.stdout.strip())
    assert not address.is_unspecified, out


def _option(argv: list[str], flag: str) -> str:
    assert argv.count(flag) == 1, (flag, argv)
    return argv[argv.index(flag) + 1]


@pytest.mark.parametrize("name", CONFIG_FILES)
def test_nothing_listens_on_every_interface(name):
    assert "0.0.0.0" not in (REPO_ROOT / name).read_text()
    assert "0.0.0.0" not in json.dumps(_filled(name))
    (head,) = [c for c in _filled(name)["head_start_ray_commands"] if "ray start --head" in c]
    assert "--dashboard-host=127.0.0.1" in head


def _ray_default_inbound_rules(group_id: str) -> list[dict]:
    """The rules Ray's AWS launcher gives a security group it creates, read from the installed
    source (importing it needs boto3): the two pure functions that build them."""
    path = Path(ray.autoscaler.__file__).parent / "_private" / "aws" / "config.py"
    wanted = {"_create_default_intracluster_inbound_rules", "_create_default_ssh_inbound_rules"}
    functions = [n for n in ast.parse(path.read_text()).body if isinstance(n, ast.FunctionDef) and n.name in wanted]
    assert len(functions) == 2, "Ray's AWS default rules moved"
    namespace: dict = {}
    exec(compile(ast.Module(functions, type_ignores=[]), str(path), "exec"), namespace)
    return (namespace["_create_default_intracluster_inbound_rules"]([group_id])
            + namespace["_create_default_ssh_inbound_rules"]())


def test_aws_security_group_opens_only_ssh():
    group = _load("cluster.yaml")["provider"]["security_group"]
    assert group["GroupName"]
    ours = group["IpPermissions"]
    defaults = _ray_default_inbound_rules("sg-self")
    # AWS rejects a rule given twice, so listing one of Ray's defaults would break `ray up`.
    assert not [rule for rule in ours if rule in defaults]
    for rule in defaults + ours:
        from_self = rule.get("UserIdGroupPairs") == [{"GroupId": "sg-self"}] and not rule.get("IpRanges")
        ssh = rule["IpProtocol"] == "tcp" and rule["FromPort"] == rule["ToPort"] == 22
        assert from_self or ssh, rule
    # Intra-cluster traffic (Ray, MLflow at the head's private IP) stays open.
    assert any(r.get("UserIdGroupPairs") == [{"GroupId": "sg-self"}] and r["IpProtocol"] == "-1" for r in defaults)


@pytest.mark.parametrize("name", CONFIG_FILES)
def test_setup_installs_package_with_gpu_extra(name):
    cfg = _load(name)
    mount = _repo_mount(cfg)
    pattern = re.compile(r"pip install (-e |--editable )?[\"']?" + re.escape(mount) + r"\[gpu\]")
    assert any(pattern.search(c) for c in cfg["setup_commands"]), cfg["setup_commands"]


@pytest.mark.parametrize("name", CONFIG_FILES)
def test_rsync_keeps_repo_junk_out_but_not_mlflow_db(name):
    cfg = _load(name)
    assert ".gitignore" in cfg.get("rsync_filter", [])
    gitignore = (REPO_ROOT / ".gitignore").read_text().split()
    assert "*.db" in gitignore  # keeps local SQLite files out of the sync
    excludes = [p.strip("/") for p in cfg.get("rsync_exclude", [])]
    for heavy in (".venv", "results", "mlruns", "data"):
        assert heavy in excludes or f"{heavy}/" in gitignore, heavy
    # rsync_exclude also applies to `ray rsync-down`: it must not drop the MLflow DB.
    assert not any(".db" in p or "mlflow" in p for p in excludes), excludes


def test_aws_sets_a_gpu_ami_on_every_node_type():
    """Ray's built-in default AMI is a CUDA 11 image; both types must override it."""
    cfg = _load("cluster.yaml")
    amis = {t["node_config"].get("ImageId") for t in cfg["available_node_types"].values()}
    assert len(amis) == 1 and None not in amis


def test_both_clusters_share_image_setup_and_mlflow():
    aws, local = _load("cluster.yaml"), _load("cluster-local.yaml")
    assert aws["docker"]["image"] == local["docker"]["image"]
    assert aws["setup_commands"] == local["setup_commands"]
    assert _repo_mount(aws) == _repo_mount(local)

    def mlflow_cmd(cfg):
        return [c for c in cfg["head_start_ray_commands"] if "tracking_server" in c]

    assert mlflow_cmd(aws) == mlflow_cmd(local)


def test_fake_autoscaler_config_is_complete(schema):
    """scripts/fake-autoscaler.yaml is read as it is (the fake provider's defaults file is not in the
    wheel), so it must be complete and valid by itself, with GPU workers launched only on demand."""
    cfg = yaml.safe_load((REPO_ROOT / "scripts" / "fake-autoscaler.yaml").read_text())
    jsonschema.validate(cfg, schema)
    for key in ("file_mounts", "cluster_synced_files", "worker_setup_commands", "worker_start_ray_commands",
                "head_node_type", "idle_timeout_minutes"):
        assert key in cfg, key
    assert cfg["provider"]["type"] == "fake_multinode"
    gpu_types = [t for name, t in cfg["available_node_types"].items()
                 if name != cfg["head_node_type"] and t["resources"].get("GPU", 0) >= 1]
    assert gpu_types and all(t["min_workers"] == 0 for t in gpu_types)
    assert cfg["available_node_types"][cfg["head_node_type"]]["resources"].get("GPU", 0) == 0
    assert cfg["idle_timeout_minutes"] <= 0.5, "scale-down must be visible within the demo"
