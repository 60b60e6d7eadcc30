import json
import shutil

import numpy as np
import pytest
import torch

from opforce_tutorial import pretrained


def test_shipped_models_verify_and_load():
    registry = pretrained.read_registry()
    assert "toy1d-flow" in registry
    for name, entry in registry.items():
        model, loaded_entry = pretrained.load(name)
        assert loaded_entry["sha256"] == entry["sha256"]
        assert entry["command"].startswith("opforce pretrain ")
        assert isinstance(model, torch.nn.Module)


def _copy_models(tmp_path):
    dst = tmp_path / "models"
    shutil.copytree(pretrained.MODELS_DIR, dst)
    return dst


def test_wrong_checksum_names_file_and_command(tmp_path):
    models = _copy_models(tmp_path)
    path = models / "toy1d_flow.pt"
    path.write_bytes(path.read_bytes() + b"corrupted")
    with pytest.raises(pretrained.PretrainedError) as err:
        pretrained.load("toy1d-flow", models_dir=models)
    msg = str(err.value)
    assert "toy1d_flow.pt" in msg and "corrupt" in msg and "opforce pretrain toy1d-flow" in msg


def test_missing_file_and_entry(tmp_path):
    models = _copy_models(tmp_path)
    (models / "toy1d_flow.pt").unlink()
    with pytest.raises(pretrained.PretrainedError, match="missing.*opforce pretrain toy1d-flow"):
        pretrained.load("toy1d-flow", models_dir=models)
    (models / "registry.json").write_text(json.dumps({}))
    with pytest.raises(pretrained.PretrainedError, match="no entry"):
        pretrained.load("toy1d-flow", models_dir=models)
    with pytest.raises(pretrained.PretrainedError, match="unknown"):
        pretrained.load("no-such-model", models_dir=models)


def test_train_policy(monkeypatch):
    monkeypatch.delenv(pretrained.ENV_VAR, raising=False)
    assert pretrained.should_train() == torch.cuda.is_available()
    assert pretrained.should_train(True) and not pretrained.should_train(False)
    monkeypatch.setenv(pretrained.ENV_VAR, "always")
    assert pretrained.should_train()
    assert not pretrained.should_train(False)  # the argument wins over the environment
    monkeypatch.setenv(pretrained.ENV_VAR, "never")
    assert not pretrained.should_train()
    monkeypatch.setenv(pretrained.ENV_VAR, "sometimes")
    with pytest.raises(ValueError, match=pretrained.ENV_VAR):
        pretrained.should_train()


def test_load_or_train_trains_when_forced(monkeypatch):
    calls = []
    tiny = torch.nn.Linear(1, 1)

    def train(device, work_dir=None):
        calls.append(device)
        return tiny, {}, {}, {}, np.arange(3)

    spec = pretrained.ModelSpec(train=train, build=lambda cfg: torch.nn.Linear(1, 1), file="unused.pt")
    monkeypatch.setattr(pretrained, "_specs", lambda: {"forced": spec})
    monkeypatch.setattr(pretrained, "_TRAINED", {})
    assert pretrained.load_or_train("forced", train=True, device="cpu") is tiny
    assert pretrained.load_or_train("forced", train=True, device="cpu") is tiny  # trained once per process
    assert calls == ["cpu"]
    assert pretrained.samples("forced", train=True).tolist() == [0, 1, 2]


def test_pretrain_writes_file_and_registry(monkeypatch, tmp_path):
    spec = pretrained.ModelSpec(train=lambda d, w=None: (torch.nn.Linear(2, 1), {"n": 2}, {"steps": 0}, {"loss": 1.0},
                                                 np.ones((4, 2), dtype=np.float32)),
                                build=lambda cfg: torch.nn.Linear(cfg["n"], 1), file="tiny.pt")
    monkeypatch.setattr(pretrained, "_specs", lambda: {"tiny": spec})
    entry = pretrained.pretrain("tiny", models_dir=tmp_path)
    assert entry["sha256"] == pretrained.sha256(tmp_path / "tiny.pt")
    assert entry["command"] == "opforce pretrain tiny" and entry["metrics"] == {"loss": 1.0}
    model, _ = pretrained.load("tiny", models_dir=tmp_path)
    assert model.in_features == 2
    assert pretrained.load_samples("tiny", models_dir=tmp_path).shape == (4, 2)
    (tmp_path / "tiny_samples.npz").write_bytes(b"x")
    with pytest.raises(pretrained.PretrainedError, match="tiny_samples.npz is corrupt.*opforce pretrain tiny"):
        pretrained.load_samples("tiny", models_dir=tmp_path)


def test_a_model_recorded_with_other_settings_than_its_recipe_is_refused_naming_the_change(monkeypatch, tmp_path):
    recipe = {"steps": 10, "lr": 0.1}
    spec = pretrained.ModelSpec(train=lambda d, w=None: (torch.nn.Linear(2, 1), {"n": 2}, dict(recipe), {}, np.ones(3)),
                                build=lambda cfg: torch.nn.Linear(cfg["n"], 1), file="tiny.pt", settings=lambda: recipe)
    monkeypatch.setattr(pretrained, "_specs", lambda: {"tiny": spec})
    pretrained.pretrain("tiny", models_dir=tmp_path)
    pretrained.load("tiny", models_dir=tmp_path)  # recorded as the recipe records it: loads
    recipe["steps"] = 20  # the recipe changed after the model was registered
    registry = pretrained.read_registry(tmp_path / "registry.json")
    assert pretrained.models_with_other_settings(registry) == ["tiny"]
    for load in (pretrained.load, pretrained.load_samples):
        with pytest.raises(pretrained.PretrainedError, match=r"other settings .*steps: 10 → 20.*opforce pretrain tiny"):
            load("tiny", models_dir=tmp_path)


def _replicable(tmp_path, monkeypatch):
    seeds = []

    def replicate(seed, device, work_dir=None):
        seeds.append(seed)
        return {"loss": float(seed)}

    spec = pretrained.ModelSpec(train=lambda d, w=None: (torch.nn.Linear(2, 1), {"n": 2}, {}, {"loss": 0.0}, None),
                                build=lambda cfg: torch.nn.Linear(cfg["n"], 1), file="tiny.pt", replicate=replicate)
    plain = pretrained.ModelSpec(train=spec.train, build=spec.build, file="plain.pt")
    monkeypatch.setattr(pretrained, "_specs", lambda: {"tiny": spec, "plain": plain})
    return seeds


def test_replicate_records_metrics_of_other_seeds_against_the_registered_weights(monkeypatch, tmp_path):
    seeds = _replicable(tmp_path, monkeypatch)
    with pytest.raises(pretrained.PretrainedError, match="opforce pretrain tiny"):
        pretrained.replicate("tiny", 1, models_dir=tmp_path)  # nothing registered yet
    registered = pretrained.pretrain("tiny", models_dir=tmp_path)
    entry = pretrained.replicate("tiny", 2, models_dir=tmp_path)
    pretrained.replicate("tiny", 3, models_dir=tmp_path)
    assert seeds == [2, 3] and entry["metrics"] == {"loss": 2.0}
    assert entry["model_sha256"] == registered["sha256"] and entry["command"] == "opforce replicate tiny --seeds 2"
    assert set(pretrained.read_replicates(tmp_path)["tiny"]) == {"2", "3"}
    with pytest.raises(ValueError, match="seed 0 is the registered model"):
        pretrained.replicate("tiny", 0, models_dir=tmp_path)
    with pytest.raises(pretrained.PretrainedError, match="no replicate training.*'tiny'"):
        pretrained.replicate("plain", 1, models_dir=tmp_path)


def test_replicate_command_skips_seeds_recorded_for_the_registered_model(monkeypatch, capsys):
    from opforce_tutorial import cli

    ran = []
    monkeypatch.setattr(pretrained, "read_registry", lambda *a: {"m": {"sha256": "new"}})
    monkeypatch.setattr(pretrained, "read_replicates", lambda *a: {"m": {
        "1": {"model_sha256": "new", "created": "today"}, "2": {"model_sha256": "old", "created": "before"}}})

    def replicate(name, seed, device="cpu"):
        ran.append(seed)
        return {"wall_time_s": 1.0, "metrics": {"populations": {"αR": {"mean": 0.3}}}}

    monkeypatch.setattr(pretrained, "replicate", replicate)
    assert cli.main(["replicate", "m", "--seeds", "1", "2", "3"]) == 0
    assert ran == [2, 3]  # seed 1 is recorded for these weights; seed 2 belongs to older weights
    assert "m seed 1: recorded already" in capsys.readouterr().out
    ran.clear()
    cli.main(["replicate", "m", "--seeds", "1", "--redo"])
    assert ran == [1]
