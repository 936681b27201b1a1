"""Offline checks of the Ray cluster launcher YAMLs (cluster.yaml, cluster-local.yaml).

No network and no credentials: defaults are filled in with
``ray.autoscaler.sdk.fillout_defaults`` and the result is validated against the
JSON schema shipped in the installed ray wheel. ``bootstrap_config`` is never
called (it would talk to AWS).
"""

from __future__ import annotations

import copy
import json
import re
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
def test_head_starts_mlflow_server(name):
    cmds = _filled(name)["head_start_ray_commands"]
    mlflow_idx = [i for i, c in enumerate(cmds) if "mlflow server" in c]
    assert len(mlflow_idx) == 1, cmds
    cmd = " ".join(cmds[mlflow_idx[0]].split())
    assert "--host 0.0.0.0" in cmd
    # sqlite:/// + an absolute path on the head's local disk (not ./mlruns, not NFS).
    assert re.search(r"--backend-store-uri sqlite:////\S+\.db\b", cmd), cmd
    assert "--artifacts-destination" in cmd
    assert "nohup" in cmd and cmd.rstrip().endswith("&"), "must run in the background"
    ray_head_idx = [i for i, c in enumerate(cmds) if "ray start --head" in c]
    assert ray_head_idx and ray_head_idx[0] > mlflow_idx[0]
    assert cmds[0].strip() == "ray stop"


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
        return [c for c in cfg["head_start_ray_commands"] if "mlflow server" in c]

    assert mlflow_cmd(aws) == mlflow_cmd(local)
