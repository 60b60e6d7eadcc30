"""The labelling pipeline: counts, exact noise labels, resume, dropped labels, flow files, torchrun sharding."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from opforce_tutorial.kernels import NoiseKernel
from opforce_tutorial.labels import LabelSettings, label_frames, load_labels, seeded_subset


@pytest.fixture
def frames():
    rng = np.random.default_rng(0)
    chain = np.cumsum(np.tile([[3.8, 0.0, 0.0]], (5, 1)), axis=0)
    return (chain + 0.2 * rng.standard_normal((40, 5, 3))).astype(np.float32)


def test_noise_labels_are_exact_scores_of_the_kept_frames(frames, tmp_path):
    kern = NoiseKernel(0.1, kbt=0.6, mean_free=True)
    out = label_frames(frames, kern, 300.0, tmp_path / "l.npz", LabelSettings(0.25, 3, batch_size=7), progress=False)
    assert out.n_labels == 30 and out.metadata["n_dropped"] == 0 and out.metadata["n_kept_frames"] == 10
    kept, counts = np.unique(out.frame_index, return_counts=True)
    assert len(kept) == 10 and (counts == 3).all()
    expected = 0.6 * (frames[out.frame_index] - out.positions) / 0.1**2
    assert np.allclose(out.forces, expected, atol=1e-3)
    assert np.allclose(out.forces.sum(axis=1), 0.0, atol=1e-3)  # mean-free noise: no net force
    again = load_labels(tmp_path / "l.npz")
    assert again.metadata["noise_std_A"] == 0.1 and again.metadata["force_unit"] == "kcal/mol/Å"
    assert np.array_equal(again.positions, out.positions)
    assert not (tmp_path / "l.npz.parts").exists()
    assert np.array_equal(kept, seeded_subset(40, 10, 0))  # the one frame-choice rule


def test_the_frame_choice_is_a_seeded_ordered_subset_of_at_most_all_frames():
    a = seeded_subset(100, 30, seed=1)
    assert len(a) == 30 and len(np.unique(a)) == 30 and (np.diff(a) > 0).all() and 0 <= a.min() and a.max() < 100
    assert np.array_equal(a, seeded_subset(100, 30, seed=1)) and not np.array_equal(a, seeded_subset(100, 30, seed=2))
    assert np.array_equal(seeded_subset(20, 50, seed=0), np.arange(20))


class _Interrupted(RuntimeError):
    pass


class _FailingKernel:
    """Wraps a kernel: raises on the call number ``fail_at``, or makes frame 0 of every batch NaN."""

    def __init__(self, kernel, fail_at=None, nan=False):
        self.kernel, self.fail_at, self.nan, self.calls = kernel, fail_at, nan, 0
        self.noise_std, self.kbt = kernel.noise_std, kernel.kbt

    def sample_with_forces(self, x, generator=None):
        self.calls += 1
        if self.calls == self.fail_at:
            raise _Interrupted
        y, f = self.kernel.sample_with_forces(x, generator)
        if self.nan:
            f[0, 0, 0] = float("nan")
        return y, f


def test_an_interrupted_run_resumes_to_the_same_labels_and_refuses_a_new_plan(frames, tmp_path):
    settings = LabelSettings(0.5, 2, batch_size=8)
    kern = NoiseKernel(0.1, kbt=0.6, mean_free=True)
    whole = label_frames(frames, kern, 300.0, tmp_path / "a.npz", settings, progress=False)
    with pytest.raises(_Interrupted):
        label_frames(frames, _FailingKernel(kern, fail_at=3), 300.0, tmp_path / "b.npz", settings, progress=False)
    assert len(list((tmp_path / "b.npz.parts").glob("batch_*.npz"))) == 2
    with pytest.raises(ValueError, match="different plan"):
        label_frames(frames, NoiseKernel(0.2, kbt=0.6, mean_free=True), 300.0, tmp_path / "b.npz", settings,
                     progress=False)
    resumed_kernel = _FailingKernel(kern)
    resumed = label_frames(frames, resumed_kernel, 300.0, tmp_path / "b.npz", settings, progress=False)
    assert resumed_kernel.calls == 3  # 5 batches, 2 already written
    assert np.array_equal(resumed.positions, whole.positions) and np.array_equal(resumed.forces, whole.forces)


def test_non_finite_labels_are_dropped_and_counted(frames, tmp_path):
    kern = _FailingKernel(NoiseKernel(0.1, kbt=0.6, mean_free=True), nan=True)
    out = label_frames(frames, kern, 300.0, tmp_path / "n.npz", LabelSettings(0.5, 2, batch_size=8), progress=False)
    assert out.metadata["n_dropped"] == 5 and out.n_labels == 40 - 5
    assert np.isfinite(out.forces).all()


def test_bad_input_is_refused(tmp_path):
    with pytest.raises(ValueError, match="frames, beads, 3"):
        label_frames(np.zeros((4, 5)), NoiseKernel(0.1, 0.6), 300.0, tmp_path / "x.npz")
    with pytest.raises(ValueError, match="data_fraction"):
        LabelSettings(data_fraction=0.0)
    with pytest.raises(ValueError, match="n_frames"):
        LabelSettings(n_frames=0)


def test_a_fixed_number_of_frames_is_labelled_whatever_the_dataset_size(tmp_path):
    assert LabelSettings(0.1).frames_to_keep(1000) == 100 and LabelSettings(n_frames=40).frames_to_keep(1000) == 40
    assert LabelSettings(n_frames=40).frames_to_keep(25) == 25
    frames = np.random.default_rng(0).normal(size=(50, 5, 3)).astype(np.float32)
    out = label_frames(frames, NoiseKernel(0.1, 0.6), 300.0, tmp_path / "n.npz", LabelSettings(n_frames=6, repeats=3),
                       progress=False)
    assert out.n_labels == 18 and len(np.unique(out.frame_index)) == 6


def _tiny_flow_file(path):
    from opforce_tutorial.kernels.coupling import CouplingFlow, CouplingFlowConfig, CouplingTraining
    from opforce_tutorial.kernels.files import save_flow

    torch.manual_seed(0)
    cfg = CouplingFlowConfig(bead_types=[0, 1, 2, 3, 4], n_coupling_layers=2, n_transformer_layers=1, d_model=16,
                             lengthscales=[1.0, 3.0], d_ff=32)
    flow = CouplingFlow(cfg)
    with torch.no_grad():  # move off the identity so the labels depend on the weights
        for p in flow.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return save_flow(path, flow, CouplingTraining(noise_std=0.1), {"temperature_K": 300.0})


def test_flow_files_round_trip_and_fail_clearly(tmp_path):
    from opforce_tutorial.kernels.files import kernel_from_file, load_flow

    digest = _tiny_flow_file(tmp_path / "f.pt")
    kern, info = kernel_from_file(tmp_path / "f.pt", kbt=0.6)
    assert info["sha256"] == digest and info["kind"] == "coupling" and kern.noise_std == 0.1
    (tmp_path / "bad.pt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="bad.pt"):
        load_flow(tmp_path / "bad.pt")
    with pytest.raises(FileNotFoundError, match="opforce train-kernel"):
        load_flow(tmp_path / "missing.pt")


def _run(args, **kw):
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    return subprocess.run(args, check=True, capture_output=True, text=True, env=env, timeout=300, **kw)


@pytest.mark.slow
def test_torchrun_with_two_processes_gives_the_labels_of_one(frames, tmp_path):
    np.savez(tmp_path / "frames.npz", positions=frames, temperature=300.0)
    _tiny_flow_file(tmp_path / "flow.pt")
    common = ["label", "--dataset", str(tmp_path / "frames.npz"), "--kernel", str(tmp_path / "flow.pt"),
              "--data-fraction", "0.5", "--repeats", "3", "--batch-size", "8"]
    _run([sys.executable, "-m", "opforce_tutorial.cli", *common, "--out", str(tmp_path / "one.npz")])
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    res = _run([torchrun, "--standalone", "--nproc_per_node", "2", "-m", "opforce_tutorial.cli", *common,
                "--out", str(tmp_path / "two.npz")])
    assert '"world_size": 2' in res.stdout
    one, two = load_labels(tmp_path / "one.npz"), load_labels(tmp_path / "two.npz")
    assert two.metadata["world_size"] == 2 and one.n_labels == two.n_labels == 60
    assert np.array_equal(one.frame_index, two.frame_index)
    assert np.allclose(one.positions, two.positions, atol=1e-6) and np.allclose(one.forces, two.forces, atol=1e-5)
    assert np.abs(one.forces).max() > 0


@pytest.mark.slow
def test_train_kernel_then_label_from_the_command_line(frames, tmp_path):
    """The README's `opforce train-kernel` and `opforce label` commands, on tiny data."""
    np.savez(tmp_path / "frames.npz", positions=frames, temperature=300.0)
    _run([sys.executable, "-m", "opforce_tutorial.cli", "train-kernel", "cnf", "--dataset", str(tmp_path / "frames.npz"),
          "--noise-std", "0.1", "--steps", "20", "--batch-size", "16", "--size", "small", "--out",
          str(tmp_path / "cnf.pt")])
    _run([sys.executable, "-m", "opforce_tutorial.cli", "label", "--dataset", str(tmp_path / "frames.npz"), "--kernel",
          str(tmp_path / "cnf.pt"), "--data-fraction", "0.1", "--repeats", "1", "--batch-size", "2",
          "--solver", "rk4", "--memory-gb", "0.5", "--out", str(tmp_path / "cnf_labels.npz")])
    out = load_labels(tmp_path / "cnf_labels.npz")
    assert out.metadata["density"] == "CNFDensity" and out.metadata["prior_std_A"] == 0.1 and out.n_labels == 4
    assert out.metadata["label_method"] == "score" and out.costs["solver_evaluations"].shape == (4,)
    assert np.allclose(out.forces.sum(axis=1), 0.0, atol=1e-3)
    meta = json.loads(json.dumps(out.metadata))
    assert meta["model_sha256"] and meta["temperature_K"] == 300.0


@pytest.mark.slow
def test_a_registered_flow_labels_by_name_and_the_datasets_weights_are_used(tmp_path):
    """`opforce label --kernel ala2-coupling-0.05` on the shipped dataset: the chapters' kernel and frames."""
    from opforce_tutorial import pretrained
    from opforce_tutorial.chapters import ala2
    from opforce_tutorial.data.dataset import load_dataset, load_frames

    out = tmp_path / "labels.npz"
    _run([sys.executable, "-m", "opforce_tutorial.cli", "label", "--dataset", "ala2", "--kernel", "ala2-coupling-0.05",
          "--data-fraction", "0.0005", "--repeats", "1", "--out", str(out)])
    labels = load_labels(out)
    registered = pretrained.read_registry()["ala2-coupling-0.05"]
    assert labels.metadata["model_sha256"] == registered["sha256"] and labels.metadata["noise_std_A"] == 0.05
    assert labels.metadata["frames"].startswith("equilibrium resample")
    frames = load_frames("ala2")
    assert np.array_equal(frames.positions, ala2.training_frames().positions)  # the chapters' frames
    ds = load_dataset("ala2")
    assert ds.weights is not None and not np.array_equal(frames.positions, ds.positions)
    done = subprocess.run([sys.executable, "-m", "opforce_tutorial.cli", "label", "--dataset", "ala2", "--kernel",
                           "ala2-cg-reference", "--out", str(tmp_path / "x.npz")], capture_output=True, text=True)
    assert done.returncode == 2 and "is not a flow" in done.stderr


def test_a_registered_flow_knows_its_training_temperature_from_its_datasets_sha256():
    from opforce_tutorial import pretrained
    from opforce_tutorial.cli import _registered_temperature

    registry = pretrained.read_registry()
    assert _registered_temperature(registry["ala2-coupling-0.05"]) == 300.0
    assert _registered_temperature(registry["cln025-cg-reference"]) == 340.0
    assert _registered_temperature(registry["toy1d-flow"]) is None  # trained on no registered dataset
    assert _registered_temperature({"metrics": {"dataset_sha256": "0" * 64}}) is None


def test_frames_files_with_weights_are_resampled_as_the_chapters_do(tmp_path):
    from opforce_tutorial.data.dataset import DatasetError, equilibrium_resample, load_frames

    x = np.cumsum(np.random.default_rng(0).normal(0, 1, (4, 3, 3)) + [1.5, 0, 0], axis=1).astype(np.float32)
    np.savez(tmp_path / "w.npz", positions=x, temperature=300.0, weights=[0.0, 0.0, 1.0, 3.0])
    frames = load_frames(tmp_path / "w.npz")
    assert np.array_equal(frames.positions, x[[2, 3, 3, 3]]) and "resample" in frames.weighting
    assert equilibrium_resample([1, 1, 1, 1]).tolist() == [0, 1, 2, 3]
    np.savez(tmp_path / "bad.npz", positions=x, temperature=300.0, weights=[1.0, 2.0])
    with pytest.raises(DatasetError, match="2 weights for 4 frames"):
        load_frames(tmp_path / "bad.npz")
    np.savez(tmp_path / "plain.npz", positions=x, temperature=300.0)
    assert load_frames(tmp_path / "plain.npz").weighting.startswith("unweighted")
