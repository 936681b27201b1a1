"""One registry per axis: every registered name is accepted by the config, offered by the command
line and placed by the grid with resources; an unregistered name fails with the allowed list."""

import pytest

from raydistill.cli import parser
from raydistill.config import ConfigError, TrialConfig
from raydistill.distill.modifiers import factorisable
from raydistill.models import build
from raydistill.registry import AXES, DATASETS, METHODS, MODELS, MODIFIERS, PROTOCOLS, Registry
from raydistill.tune.grid import Grid, expand, resources

HELP_AXES = {"dataset": "--dataset", "model": "--model", "method": "--method", "modifier": "--modifier",
             "protocol": "--protocol"}


def run_help(capsys) -> str:
    with pytest.raises(SystemExit):
        parser().parse_args(["run", "--help"])
    return "".join(capsys.readouterr().out.split())  # argparse wraps lines, also at hyphens


def value_for(axis: str, name: str) -> dict:
    if axis == "dataset":
        return {"dataset": name.replace("PATH", "/data/ocid")}
    fields = {axis: name}
    if axis == "method" and name == "full":
        fields["modifier"] = "none"
    return fields


@pytest.mark.parametrize("axis", list(AXES))
def test_every_registered_name_is_accepted_offered_and_placed(axis, capsys):
    text = run_help(capsys)
    for entry in AXES[axis].entries():
        cfg = TrialConfig(**value_for(axis, entry.name)).validate()
        assert f"{entry.name}={''.join(entry.description.split())}" in text, (axis, entry.name)
        (cell,) = expand(Grid("g", [{k: [v] for k, v in value_for(axis, entry.name).items()}]))
        assert cell.config == cfg.replace(**({"ipc": 1, "teacher_epochs": cfg.student_epochs} if not cfg.distills
                                             else {}))
        placed = resources(cell.config, gpus_available=True)
        assert placed["CPU"] >= 1 and placed["GPU"] == MODELS[cell.config.model].gpu_share > 0


@pytest.mark.parametrize("axis,field", [("dataset", "dataset"), ("model", "model"), ("method", "method"),
                                        ("modifier", "modifier"), ("protocol", "protocol")])
def test_an_unregistered_name_fails_with_the_allowed_list(axis, field):
    with pytest.raises(ConfigError) as err:
        TrialConfig(**{field: "nonsense"}).validate()
    assert f"unknown {axis} 'nonsense'; allowed: {', '.join(AXES[axis].names())}" in str(err.value)


def test_a_newly_registered_model_is_accepted_everywhere(monkeypatch, capsys):
    """The one-file promise: a registration is all it takes (here on a copy of the registry)."""
    registry = Registry("model", ())
    for entry in MODELS.entries():
        registry.add(entry.name, entry.description, entry.obj, **entry.meta)
    registry.add("tiny", "a two-layer test model", MODELS["lenet"].obj, gpu_share=0.5, factorised_norms=True)
    monkeypatch.setattr(MODELS, "_entries", registry._entries)
    cfg = TrialConfig(model="tiny").validate()
    assert resources(cfg, gpus_available=True)["GPU"] == 0.5
    assert "tiny=atwo-layertestmodel" in run_help(capsys)


def test_registered_norm_facts_match_the_models():
    for entry in MODELS.entries():
        model = build(entry.name, (1, 28, 28), 10, [0.5], [0.5])
        assert factorisable(model) == entry.factorised_norms, entry.name


def test_registering_a_name_twice_is_refused():
    registry = Registry("thing", ())
    registry.add("a", "first", 1)
    with pytest.raises(ValueError, match="registered twice"):
        registry.add("a", "second", 2)


def test_each_axis_has_its_facts():
    assert all(METHODS[n].uses_kmeans for n in ("kmeans", "kmeans-nearest"))
    assert not METHODS["full"].distills and METHODS["kmeans"].distills
    assert MODIFIERS["grad-l1"].per_image_norms and not MODIFIERS["none"].needs_teacher
    assert PROTOCOLS["paper"].forensics and not PROTOCOLS["dc"].forensics
    assert "folder:PATH" in DATASETS


def test_the_readme_tables_are_the_registries():
    from pathlib import Path

    from raydistill.registry import markdown

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme.split("<!-- registry:start -->\n", 1)[1].split("\n<!-- registry:end -->", 1)[0]
    assert block == markdown()


def test_a_cell_key_hashes_the_settings_off_their_defaults_and_a_protocol_revision():
    import hashlib
    import json

    from raydistill.config import TrialConfig
    from raydistill.registry import PROTOCOLS

    def expected(fields: dict) -> str:  # the documented rule, written out
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]

    cfg = TrialConfig(dataset="mnist", ipc=50, data_root="/somewhere", seed=0)  # seed 0 and the root: defaults, location
    assert cfg.key() == expected({"dataset": "mnist", "ipc": 50})
    assert TrialConfig().key() == expected({})  # a setting added at its default leaves every key as it was
    assert cfg.replace(eval_sets=1).key() == cfg.key() and cfg.replace(eval_sets=2, protocol="dc").key() != cfg.key()
    entry = PROTOCOLS["dc"]
    dc = cfg.replace(protocol="dc")
    before = dc.key()
    object.__setattr__(entry, "meta", {**entry.meta, "revision": 1})
    try:
        assert dc.key() == expected({"dataset": "mnist", "ipc": 50, "protocol": "dc", "protocol_revision": 1}) != before
    finally:
        object.__setattr__(entry, "meta", {**entry.meta, "revision": 0})
    assert dc.key() == before
