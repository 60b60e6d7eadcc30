"""The study pipeline on a user's own frames: `opforce study` and `run_study`, end to end on tiny data."""

import json
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch

from opforce_tutorial.cg.pipeline import CGRunSettings
from opforce_tutorial.cg.training import ForceMatchingSettings
from opforce_tutorial.data.dataset import load_user_dataset
from opforce_tutorial.kernels.cnf import SMALL_EGNN
from opforce_tutorial.labels import LabelSettings
from opforce_tutorial.study import FlowRecipe, chain_study, run_study

from chains import ala2_like, toy_prior

TINY = dict(flows={"coupling": FlowRecipe({"n_coupling_layers": 1, "n_transformer_layers": 1, "d_model": 16,
                                           "d_ff": 32, "coordinates": "bonds"}, 20, 32),
                   "cnf": FlowRecipe({**SMALL_EGNN, "hidden": 8, "n_layers": 1}, 20, 32)},
            labels=LabelSettings(n_frames=64, repeats=2, batch_size=64),
            output_labels=LabelSettings(n_frames=64, repeats=1, batch_size=64),
            cg=CGRunSettings(hidden=8, n_rbf=8, n_replicas=4, n_steps=200, save_every=50, burn_in=0,
                             force_matching=ForceMatchingSettings(n_steps=20, eval_every=10, batch_size=32)))


@pytest.fixture
def frames_file(tmp_path):
    rng = np.random.default_rng(0)
    x = ala2_like(600, rng)[0].astype(np.float32)
    f = toy_prior(5).forces(torch.as_tensor(x, dtype=torch.float64)).float().numpy()
    path = tmp_path / "my_frames.npz"
    np.savez(path, positions=x, forces=f, temperature=300.0, bead_names=np.array(["C", "N", "CA", "C", "N"]),
             traj_ids=np.repeat([0, 1], 300), weights=np.linspace(1.0, 2.0, 600))
    return path


def test_every_label_source_runs_to_a_scored_model_and_a_report(frames_file, tmp_path):
    ds = load_user_dataset(frames_file)
    study = chain_study(ds, "mine", (0.05,), **TINY)
    rows = run_study(study, tmp_path / "out", progress=False)
    assert [r["model"] for r in rows] == ["mine-cg-reference", "mine-cg-noise-0.05", "mine-cg-coupling-0.05",
                                          "mine-cg-cnf-0.05"]
    for r in rows:
        assert r["n_labels"] == 128 and set(r["js"]) == set(study.system.observables)
        assert all(0 <= v["js"] <= np.log(2) and v["js_floor"] > 0 for v in r["js"].values())
    assert set(rows[2]["output_js"]) == {"bond 0-1", "bond 1-2", "bond 2-3", "bond 3-4", "angle 0-1-2",
                                         "angle 1-2-3", "angle 2-3-4"}
    out = tmp_path / "out"
    assert (out / "figures" / "bonds.png").exists() and (out / "figures" / "angles.png").exists()
    assert "mine-cg-cnf-0.05" in (out / "report.md").read_text()
    assert (out / "models" / "mine-coupling-0.05.pt").exists() and (out / "models" / "mine-cg-noise-0.05.pt").exists()
    before = json.loads((out / "results.json").read_text())
    assert run_study(study, out, progress=False) == list(before.values())  # finished models are not redone


def test_the_reference_of_a_user_study_is_the_weighted_data(frames_file):
    from opforce_tutorial.evaluation import make_reference

    ds = load_user_dataset(frames_file)
    ref = chain_study(ds, "mine", (0.05,), **TINY).reference_histograms()
    weighted = make_reference(ds.positions, ["bond 0-1"], ds.weights)
    assert np.allclose(ref.probabilities["bond 0-1"], weighted.probabilities["bond 0-1"])


def test_bad_studies_are_refused_before_any_work(frames_file, tmp_path):
    ds = load_user_dataset(frames_file)
    with pytest.raises(ValueError, match="positive standard deviations"):
        chain_study(ds, "mine", (0.0,))
    with pytest.raises(ValueError, match="unknown label sources"):
        chain_study(ds, "mine", (0.05,), ("reference", "magic"))
    np.savez(tmp_path / "noforces.npz", positions=ds.positions, temperature=300.0)
    with pytest.raises(ValueError, match="reference source needs forces"):
        chain_study(load_user_dataset(tmp_path / "noforces.npz"), "x", (0.05,))
    np.savez(tmp_path / "nm.npz", positions=ds.positions / 10, temperature=300.0)
    with pytest.raises(ValueError, match="nm"):
        load_user_dataset(tmp_path / "nm.npz")
    np.savez(tmp_path / "names.npz", positions=ds.positions, temperature=300.0, bead_names=np.array(["X"] * 5))
    done = subprocess.run([sys.executable, "-m", "opforce_tutorial.cli", "study", "--dataset", str(tmp_path / "names.npz"),
                           "--sources", "noise", "--out", str(tmp_path / "o")], capture_output=True, text=True)
    assert done.returncode == 2 and "bead masses" in done.stderr and not (tmp_path / "o").exists()


@pytest.mark.slow
def test_opforce_study_from_the_command_line(frames_file, tmp_path):
    """The README's `opforce study` command on tiny data, with the try-out budget."""
    done = subprocess.run([sys.executable, "-m", "opforce_tutorial.cli", "study", "--dataset", str(frames_file),
                           "--sources", "reference", "noise", "--noise-std", "0.05", "--quick", "--out",
                           str(tmp_path / "out")], capture_output=True, text=True, timeout=900,
                          env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "my_frames-cg-noise-0.05" in done.stdout and (tmp_path / "out" / "report.md").exists()


def test_the_reference_takes_every_frame_and_models_recorded_with_other_settings_are_named_for_retraining():
    from dataclasses import asdict

    from opforce_tutorial import pretrained
    from opforce_tutorial.chapters import ala2
    from opforce_tutorial.data.dataset import CGDataset

    x = np.random.default_rng(0).normal(size=(100, 5, 3)).astype(np.float32)
    ds = CGDataset("t", x, -x, 300.0, np.zeros(100, int), 1.0, ["C"] * 5)
    assert len(ala2.labelled_set("reference", None, ds)[2]) == 100  # every frame: chapter 2's reference budget
    assert ala2.STUDY.label_settings("noise") == ala2.LABELS and ala2.STUDY.label_settings("reference").repeats == 1
    specs = ala2.STUDY.recipes()
    registry = {name: {"training": json.loads(json.dumps(spec.settings()))} for name, spec in specs.items()}
    assert ala2.models_with_other_settings(registry) == []  # every recipe's own record agrees with it
    registry["ala2-cg-noise-0.1"]["training"]["cg"]["force_matching"]["n_steps"] = 3000  # another budget
    registry["ala2-cg-reference"]["training"]["labels"] = asdict(ala2.LABELS)  # the kernels' 4 000 frames
    del registry["ala2-cg-cnf-0.05"]["training"]["cg"]["clamp_to_training"]  # recorded before the clamp existed
    registry[ala2.CNF_PAPER_LABELS]["training"]["labels"] = asdict(ala2.LABELS)  # not the variant's own budget
    registry["ala2-coupling-0.05"]["training"]["n_steps"] = 4000  # a flow trained shorter
    registry["ala2-prior-only"]["training"]["simulation"]["n_steps"] //= 2
    registry["ala2-cg-reference-x"] = {"training": {}}  # not a model of the study
    assert ala2.models_with_other_settings(registry) == sorted([
        "ala2-cg-noise-0.1", "ala2-cg-reference", "ala2-cg-cnf-0.05", ala2.CNF_PAPER_LABELS, "ala2-coupling-0.05",
        "ala2-prior-only"])
    assert pretrained.settings_changes("ala2-cg-noise-0.1", registry["ala2-cg-noise-0.1"]) == [
        f"cg.force_matching.n_steps: 3000 → {ala2.CG_SETTINGS.force_matching.n_steps}"]
    assert pretrained.settings_changes("ala2-cg-cnf-0.05", registry["ala2-cg-cnf-0.05"]) == [
        "cg.clamp_to_training: absent → True"]
    assert ala2.LONG_REFERENCE not in ala2.models_with_other_settings(registry)  # its own, longer budget is its recipe


def test_a_variant_that_is_a_measurement_is_not_required_but_trains_with_its_own_budget():
    from opforce_tutorial.chapters import ala2

    specs, models = ala2.STUDY.recipes(), ala2.STUDY.cg_models()
    assert list(models)[:len(ala2.cg_model_names())] == ala2.cg_model_names()
    assert list(models)[-4:] == [ala2.CHIRAL_REFERENCE, ala2.LONG_REFERENCE, ala2.CNF_PAPER_LABELS,
                                 ala2.ENSEMBLE_REFERENCE]
    assert specs[ala2.ENSEMBLE_REFERENCE].required is False and models[ala2.ENSEMBLE_REFERENCE].ensemble == 4
    assert specs[ala2.ENSEMBLE_REFERENCE].settings()["n_members"] == 4 and "n_members" not in specs[
        "ala2-cg-reference"].settings()  # a single network records no ensemble size
    assert set(models) <= set(specs) and specs[ala2.CNF_PAPER_LABELS].required is False
    assert models[ala2.CNF_PAPER_LABELS].labels.frames_to_keep(107_500) == 10_750  # the paper's 10 % of frames
    assert models["ala2-cg-cnf-0.1"].source == "cnf" and models["ala2-cg-cnf-0.1"].noise_std == 0.1
    assert specs[ala2.LONG_REFERENCE].required is False and specs[ala2.CHIRAL_REFERENCE].required is True
    assert ala2.LONG_FM.n_steps == 2 * ala2.CG_SETTINGS.force_matching.n_steps
    assert ala2.LONG_FM.patience == ala2.CG_SETTINGS.force_matching.patience


def test_kernel_labels_record_the_flow_weights_and_refuse_to_resume_with_other_ones(frames_file, tmp_path,
                                                                                   monkeypatch):
    from opforce_tutorial.kernels.coupling import CouplingFlow, CouplingFlowConfig
    from opforce_tutorial.labels import load_labels
    from opforce_tutorial.storage import state_sha256

    ds = load_user_dataset(frames_file)
    study = chain_study(ds, "mine", (0.05,), **TINY)
    config = CouplingFlowConfig(bead_types=study.bead_types, **TINY["flows"]["coupling"].config)
    torch.manual_seed(0)
    flow, retrained = CouplingFlow(config), CouplingFlow(config)
    assert state_sha256(flow) != state_sha256(retrained) and state_sha256(flow) == state_sha256(flow)
    settings = LabelSettings(n_frames=8, repeats=1, batch_size=4)

    make_kernel = study.make_kernel

    def killed(x, generator):
        raise KeyboardInterrupt

    def killed_at_the_first_batch(*args, **kwargs):
        kernel = make_kernel(*args, **kwargs)
        kernel.sample_with_forces = killed
        return kernel

    monkeypatch.setattr(study, "make_kernel", killed_at_the_first_batch)
    with pytest.raises(KeyboardInterrupt):
        study.labelled_set("coupling", 0.05, ds, flow, settings, progress=False, work_dir=tmp_path)
    monkeypatch.setattr(study, "make_kernel", make_kernel)
    with pytest.raises(ValueError, match="different plan"):  # the flow was retrained meanwhile
        study.labelled_set("coupling", 0.05, ds, retrained, settings, progress=False, work_dir=tmp_path)
    study.labelled_set("coupling", 0.05, ds, flow, settings, progress=False, work_dir=tmp_path)
    metadata = load_labels(tmp_path / "labels.npz").metadata
    assert metadata["model_sha256"] == state_sha256(flow) and metadata["source"] == "mine"


def test_a_published_recipe_trains_with_the_study_settings_of_when_it_runs(monkeypatch):
    """The catalog keeps each spec for the process: a spec made before a test shrinks the recipe must see it."""
    from opforce_tutorial.chapters import ala2

    specs = ala2.STUDY.recipes()  # made first, as the catalog makes them once
    tiny = replace(ala2.STUDY.cg, n_replicas=2)
    monkeypatch.setattr(ala2.STUDY, "cg", tiny)
    seen = []

    class Stop(Exception):
        pass

    def fake_cg_run(ds, source, noise_std, flow, seed, device, dihedral_hidden=0, cg_settings=None, **_):
        seen.append(cg_settings)
        raise Stop

    monkeypatch.setattr(ala2.STUDY, "cg_run", fake_cg_run)
    for name in ("ala2-cg-reference", ala2.LONG_REFERENCE):
        with pytest.raises(Stop):
            specs[name].train("cpu", None)
    assert seen[0] == tiny and seen[1] == replace(tiny, force_matching=ala2.LONG_FM)


def test_kernel_outputs_are_seeded_draws_of_the_kernel_on_random_data_frames():
    from opforce_tutorial.chapters import ala2
    from opforce_tutorial.data.dataset import CGDataset

    x = np.random.default_rng(0).normal(size=(400, 5, 3)).astype(np.float32)
    ds = CGDataset("t", x, -x, 300.0, np.zeros(400, int), 1.0, ["C"] * 5)
    y = ala2.STUDY.kernel_outputs("noise", 0.1, ds, n_frames=300, seed=2, chunk=64)
    assert y.shape == (300, 5, 3) and np.array_equal(y, ala2.STUDY.kernel_outputs("noise", 0.1, ds, n_frames=300, seed=2))
    idx = np.sort(np.random.default_rng(2).choice(400, 300, replace=False))
    d = y - x[idx]
    assert np.abs(d.mean(axis=1)).max() < 1e-6  # mean-free noise: the centre of mass stays
    assert d.std() * np.sqrt(5 / 4) == pytest.approx(0.1, rel=0.05)  # σ per coordinate in the mean-free subspace
    assert len(ala2.STUDY.kernel_outputs("noise", 0.1, ds, n_frames=10_000)) == 400  # at most every frame
    with pytest.raises(ValueError, match="need a kernel"):
        ala2.STUDY.kernel_outputs("reference", 0.1, ds)
    with pytest.raises(ValueError, match="n_frames"):
        ala2.STUDY.kernel_outputs("noise", 0.1, ds, n_frames=0)


def test_a_second_torchrun_rank_labels_its_share_and_exits_cleanly(frames_file, tmp_path):
    """Two ranks (gloo) of `opforce study`: rank 1 writes half the label batches and ends with status 0 and one
    line; rank 0 merges them and trains on all of them."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-m", "opforce_tutorial.cli", "study", "--dataset", str(frames_file), "--sources",
               "noise", "--noise-std", "0.05", "--quick", "--out", str(tmp_path / "out")]
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(port)}
    ranks = [subprocess.Popen(command, env={**env, "RANK": str(r), "LOCAL_RANK": str(r)}, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for r in (0, 1)]
    (out0, err0), (_, err1) = (rank.communicate(timeout=900) for rank in ranks)
    assert [rank.returncode for rank in ranks] == [0, 0], err0[-2000:] + err1[-2000:]
    assert "Traceback" not in err1 and "rank 0 goes on" in err1.strip().splitlines()[-1]
    assert "my_frames-cg-noise-0.05" in out0
