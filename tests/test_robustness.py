"""Nothing lost, nothing wrong written: kills mid-write, corrupt files, mismatched resumes, bad inputs."""

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from opforce_tutorial.cli import main
from opforce_tutorial.storage import atomic_savez, read_json, remove_stale_temporaries, update_json


def _cli(capsys, *args):
    status = main(list(args))
    return status, capsys.readouterr()


# --------------------------------------------------------------------------- atomic writes
def test_a_write_that_fails_midway_leaves_the_old_file_and_no_result_named_temporary(tmp_path, monkeypatch):
    path = tmp_path / "chunk_00000006.npz"
    atomic_savez(path, a=np.arange(3))

    def broken_savez(f, **arrays):
        f.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        atomic_savez(path, a=np.arange(5))
    monkeypatch.undo()
    assert np.load(path)["a"].tolist() == [0, 1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chunk_00000006.npz"]


def test_a_killed_writer_leaves_a_temporary_no_pattern_reads_and_the_next_start_removes_it(tmp_path):
    """kill -9 while a chunk is written: the leftover is hidden, never ``chunk_*.npz``, and is cleaned."""
    script = textwrap.dedent(f"""
        import numpy as np, os, signal
        from opforce_tutorial import storage
        def write(f):
            f.write(b"partial")
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        storage.atomic_write({str(tmp_path / 'chunk_00000006.npz')!r}, write)
    """)
    out = subprocess.run([sys.executable, "-c", script])
    assert out.returncode == -signal.SIGKILL
    assert list(tmp_path.glob("chunk_*.npz")) == []
    leftovers = list(tmp_path.iterdir())
    assert len(leftovers) == 1 and leftovers[0].name.startswith(".chunk_00000006.npz.")
    (tmp_path / f"chunk_1.npz.{os.getpid()}.tmp.npz").write_bytes(b"")  # an older version's name, live pid
    (tmp_path / "chunk_2.npz.999999999.tmp.npz").write_bytes(b"")  # ... and a dead one
    assert sorted(p.name for p in remove_stale_temporaries(tmp_path)) == sorted(
        [leftovers[0].name, "chunk_2.npz.999999999.tmp.npz"])
    assert [p.name for p in tmp_path.iterdir()] == [f"chunk_1.npz.{os.getpid()}.tmp.npz"]  # a live writer's is kept


def test_concurrent_registry_writers_lose_no_entry(tmp_path):
    path = tmp_path / "registry.json"
    script = textwrap.dedent(f"""
        import sys
        from opforce_tutorial.storage import update_json
        for i in range(25):
            update_json({str(path)!r}, lambda r: r.__setitem__(f"{{sys.argv[1]}}-{{i}}", i))
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script, name]) for name in ("a", "b", "c")]
    assert all(p.wait() == 0 for p in procs)
    assert len(read_json(path)) == 75


def test_a_truncated_registry_names_the_file_and_the_fix(tmp_path):
    from opforce_tutorial.pretrained import read_registry

    path = tmp_path / "registry.json"
    update_json(path, lambda r: r.update(model={"file": "m.pt"}))
    path.write_text(path.read_text()[:10])
    with pytest.raises(ValueError, match=f"{path}.*not valid JSON.*git checkout"):
        read_registry(path)


# --------------------------------------------------------------------------- MD run directories
def test_an_invalid_md_configuration_writes_nothing_and_a_changed_flag_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    for flags, words in ((["--temperatures", "0"], "temperatures = 0.0 K"),
                         (["--temperatures", "27"], "27 °C is 300.15 K"),
                         (["--interval-ps", "0"], "--interval-ps"),
                         (["--chunk-frames", "0"], "--chunk-frames")):
        status, captured = _cli(capsys, "data", "md", "ala2", "--ns", "0.001", "--out", str(out), *flags)
        assert status == 2 and words in captured.err and len(captured.err.strip().splitlines()) == 1
        assert not out.exists()
    for flags, words in ((["--copies", "0"], "--copies"), (["--temperature", "-5"], "--temperature")):
        status, captured = _cli(capsys, "data", "copies", "ala2", "--ns", "0.001", "--out", str(out), *flags)
        assert status == 2 and words in captured.err and not out.exists()
    assert _cli(capsys, "data", "md", "ala2", "--ns", "0.0004", "--out", str(out), "--temperatures", "300", "400",
                "--interval-ps", "0.2", "--chunk-frames", "2")[0] == 0
    status, captured = _cli(capsys, "data", "md", "ala2", "--ns", "0.0008", "--out", str(out), "--temperatures", "250")
    assert status == 2 and "temperatures = [300.0, 400.0], asked for [250.0]" in captured.err
    assert _cli(capsys, "data", "md", "ala2", "--ns", "0.0008", "--out", str(out))[0] == 0  # the same run resumes
    its = np.concatenate([np.load(c)["iteration"] for c in sorted(out.glob("chunk_*.npz"))])
    assert its.tolist() == [1, 2, 3, 4]


# --------------------------------------------------------------------------- training and labelling
def test_a_flow_checkpoint_refuses_another_noise_std_learning_rate_or_seed(tmp_path):
    from opforce_tutorial.kernels.cnf import CNFTraining, EGNNConfig, train_cnf
    from opforce_tutorial.kernels.training import CheckpointMismatch

    x = torch.tensor([[0.0, 0.0, 0.0], [3.8, 0.0, 0.0], [3.8, 3.8, 0.0]]) + 0.1 * torch.randn(
        200, 3, 3, generator=torch.Generator().manual_seed(0))
    cfg = EGNNConfig(bead_types=[0, 1, 2], hidden=8, n_layers=1)
    settings = CNFTraining(noise_std=0.05, prior_std=0.05, n_steps=20, batch_size=16, eval_every=10,
                           checkpoint_every=10)
    ckpt = str(tmp_path / "cnf.pt")
    train_cnf(x, cfg, settings, checkpoint=ckpt, progress=False)
    for change, words in ((dict(noise_std=0.1), "settings.noise_std: 0.05 in the checkpoint, 0.1 now"),
                          (dict(lr=1e-3), "settings.lr"), (dict(seed=3), "settings.seed")):
        with pytest.raises(CheckpointMismatch, match=words):
            train_cnf(x, cfg, CNFTraining(**{**settings.__dict__, **change}), checkpoint=ckpt, progress=False)
    with pytest.raises(CheckpointMismatch, match="data_sha256"):
        train_cnf(x + 0.01, cfg, settings, checkpoint=ckpt, progress=False)
    train_cnf(x, cfg, settings, checkpoint=ckpt, progress=False)  # the same run resumes
    bad = x.clone()
    bad[3, 1, 2] = float("nan")
    with pytest.raises(ValueError, match="1 frames have non-finite positions"):
        train_cnf(bad, cfg, settings, progress=False)


def test_train_kernel_and_label_refuse_bad_input_in_one_line(tmp_path, capsys):
    frames = np.cumsum(np.full((20, 4, 3), 3.8 / np.sqrt(3)), axis=1) + np.random.default_rng(0).normal(
        0, 0.1, (20, 4, 3))
    np.savez(tmp_path / "ok.npz", positions=frames, temperature=300.0)
    np.savez(tmp_path / "nm.npz", positions=frames / 10, temperature=300.0)
    np.savez(tmp_path / "celsius.npz", positions=frames, temperature=27.0)
    nan = frames.copy()
    nan[2, 0, 0] = np.nan
    np.savez(tmp_path / "nan.npz", positions=nan, temperature=300.0)
    np.savez(tmp_path / "one.npz", positions=frames[:, :1], temperature=300.0)
    cases = [(["train-kernel", "cnf", "--dataset", str(tmp_path / "ok.npz"), "--noise-std", "0"], "--noise-std"),
             (["train-kernel", "cnf", "--dataset", str(tmp_path / "nm.npz"), "--noise-std", "0.05"], "in nm?"),
             (["label", "--dataset", str(tmp_path / "celsius.npz"), "--kernel", "noise", "--noise-std", "0.05"],
              "°C"),
             (["label", "--dataset", str(tmp_path / "nan.npz"), "--kernel", "noise", "--noise-std", "0.05"],
              "non-finite"),
             (["label", "--dataset", str(tmp_path / "one.npz"), "--kernel", "noise", "--noise-std", "0.05"],
              "at least 2 beads"),
             (["label", "--dataset", str(tmp_path / "ok.npz"), "--kernel", "noise", "--noise-std", "-1"],
              "--noise-std")]
    for argv, words in cases:
        status, captured = _cli(capsys, *argv, "--out", str(tmp_path / "out.pt"))
        assert status == 2 and words in captured.err, (argv, captured.err)
        assert len(captured.err.strip().splitlines()) == 1 and "Traceback" not in captured.err
    assert not (tmp_path / "out.pt").exists()


def test_two_labelling_runs_on_one_output_do_not_race(tmp_path):
    from opforce_tutorial.kernels import NoiseKernel
    from opforce_tutorial.labels import LabelSettings, label_frames
    from opforce_tutorial.storage import locked

    frames = np.cumsum(np.full((10, 4, 3), 2.0), axis=1)
    out = tmp_path / "labels.npz"
    parts = tmp_path / "labels.npz.parts"
    parts.mkdir()
    with locked(parts / "labelling", busy="busy"):  # another process is labelling
        with pytest.raises(ValueError, match="another process is labelling into"):
            label_frames(frames, NoiseKernel(0.05, 0.6), 300.0, out, LabelSettings(1.0, 1, 4), progress=False)
    assert label_frames(frames, NoiseKernel(0.05, 0.6), 300.0, out, LabelSettings(1.0, 1, 4),
                        progress=False).n_labels == 10


# --------------------------------------------------------------------------- evaluators
def test_evaluators_refuse_non_finite_frames_and_score_nm_positions_as_far_off():
    from opforce_tutorial.evaluation import evaluate, make_reference

    rng = np.random.default_rng(0)
    frames = np.cumsum(rng.normal(0, 1, (500, 4, 3)) + [3.0, 0, 0], axis=1)
    names = ["bond 0-1", "angle 0-1-2"]
    broken = frames.copy()
    broken[:3] = np.nan
    with pytest.raises(ValueError, match="3 frames have non-finite"):
        make_reference(broken, names)
    ref = make_reference(frames, names)
    with pytest.raises(ValueError, match="non-finite"):
        evaluate(broken, ref, names)
    assert evaluate(frames / 10, ref, ["bond 0-1"])["bond 0-1"]["js"] > 0.6  # nm: outside every bin


# --------------------------------------------------------------------------- the verifier
def test_opforce_models_fails_on_a_corrupt_simulation_or_dataset_and_names_the_fix(tmp_path, monkeypatch, capsys):
    import shutil

    from opforce_tutorial import pretrained
    from opforce_tutorial.data import dataset

    models, data = tmp_path / "models", tmp_path / "data"
    shutil.copytree(pretrained.MODELS_DIR, models)
    data.mkdir()
    for f in ("registry.json", "ala2_histograms.npz"):
        shutil.copy(dataset.DATA_DIR / f, data / f)
    monkeypatch.setattr(pretrained, "MODELS_DIR", models)
    monkeypatch.setattr(pretrained, "REGISTRY", models / "registry.json")
    monkeypatch.setattr(dataset, "DATA_DIR", data)
    entry = pretrained.read_registry(models / "registry.json")["ala2-cg-noise-0.05"]
    (models / entry["samples"]["file"]).write_bytes(b"truncated")
    status, captured = _cli(capsys, "models")
    broken = [line for line in captured.out.splitlines() if line.startswith("BROKEN")]
    assert status == 1
    assert any("ala2-cg-noise-0.05 samples" in line and "opforce pretrain ala2-cg-noise-0.05" in line for line in broken)
    assert any(line.split()[1] == "ala2" and "missing" in line for line in broken)  # data/ala2.npz not copied
    assert any(line.split()[1] == "cln025" for line in broken)
    (models / "registry.json").unlink()
    status, captured = _cli(capsys, "models")
    assert status == 1 and "registry.json is missing" in captured.out


# --------------------------------------------------------------------------- long jobs resume
def test_a_killed_simulation_resumes_to_the_uninterrupted_result_bitwise(tmp_path):
    from opforce_tutorial.simulation import simulate_langevin

    x0 = torch.randn(4, 3, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    calls = {"n": 0, "kill_at": None}

    def forces(x):
        calls["n"] += 1
        if calls["kill_at"] is not None and calls["n"] == calls["kill_at"]:
            raise KeyboardInterrupt  # a kill between two checkpoints
        return -2.0 * x

    def run(checkpoint=None, **changes):
        settings = dict(masses=12.0, kbt=0.6, dt=0.002, friction=1.0, n_steps=60, save_every=4, burn_in=8,
                        generator=torch.Generator().manual_seed(1), progress=False, checkpoint=checkpoint,
                        checkpoint_every=7)
        return simulate_langevin(forces, x0, **{**settings, **changes})

    whole = run()
    ckpt = str(tmp_path / "sim.ckpt")
    calls.update(n=0, kill_at=45)
    with pytest.raises(KeyboardInterrupt):
        run(ckpt)
    assert os.path.exists(ckpt) and torch.load(ckpt, weights_only=True)["step"] == 42
    calls.update(kill_at=None)
    assert torch.equal(run(ckpt), whole)
    with pytest.raises(ValueError, match="checkpoint of another simulation"):
        run(ckpt, dt=0.001)


def test_pretrain_and_replicate_give_each_run_a_work_directory_that_survives_a_kill(monkeypatch, tmp_path):
    from opforce_tutorial import pretrained

    seen = []

    def train(device, work_dir):
        seen.append(work_dir)
        marker = work_dir / "stage1.done"
        if not marker.exists():  # the first attempt is killed after its first stage
            marker.write_text("")
            raise KeyboardInterrupt
        return torch.nn.Linear(2, 1), {"n": 2}, {}, {"loss": 0.0}, None

    spec = pretrained.ModelSpec(train=train, build=lambda cfg: torch.nn.Linear(cfg["n"], 1), file="tiny.pt")
    monkeypatch.setattr(pretrained, "_specs", lambda: {"tiny": spec})
    with pytest.raises(KeyboardInterrupt):
        pretrained.pretrain("tiny", models_dir=tmp_path)
    assert (tmp_path / ".work" / "tiny" / "stage1.done").exists()
    assert len(read_json(tmp_path / ".work" / "tiny" / pretrained.WALL_TIME)["invocations_s"]) == 1
    entry = pretrained.pretrain("tiny", models_dir=tmp_path)  # the same command resumes
    assert seen == [tmp_path / ".work" / "tiny"] * 2 and not (tmp_path / ".work" / "tiny").exists()
    # the entry's wall time is both invocations', each listed
    assert len(entry["invocations_s"]) == 2 and entry["wall_time_s"] == pytest.approx(sum(entry["invocations_s"]), abs=0.1)


def test_a_run_clock_keeps_each_invocation_and_a_killed_one_loses_at_most_one_beat(tmp_path):
    import time

    from opforce_tutorial.storage import RunClock

    path = tmp_path / "wall_time.json"
    with RunClock(path, every=0.05) as clock:
        time.sleep(0.3)
        beat = read_json(path)["invocations_s"]  # written while the run goes on: what a kill would leave
        assert len(beat) == 1 and 0.2 <= beat[0] <= 0.31
    assert clock.record() == {"wall_time_s": clock.invocations_s[0]} and clock.total_s >= 0.3
    with RunClock(path, every=0.05) as resumed:
        time.sleep(0.1)
    first, second = resumed.invocations_s
    assert first == clock.invocations_s[0] and 0.1 <= second < 0.3
    assert resumed.record() == {"wall_time_s": round(first + second, 1), "invocations_s": [first, second]}
    with pytest.raises(ValueError, match="every must be positive"):
        RunClock(path, every=0)


def test_a_dataset_build_refuses_another_molecules_runs(tmp_path):
    from opforce_tutorial.data.dataset import DatasetError, build_dataset
    from opforce_tutorial.data.remd import REMDConfig, ReplicaExchange

    ReplicaExchange(tmp_path / "ala2_run", REMDConfig(temperatures=[300.0], exchange_every_ps=0.2,
                                                      chunk_frames=2)).run(0.0004, progress=False)
    with pytest.raises(DatasetError, match=r"simulated \['ala2'\], not one molecule 'cln025'"):
        build_dataset("cln025", [tmp_path / "ala2_run"], [f"CA{i}" for i in range(10)], data_dir=tmp_path / "data")
    with pytest.raises(DatasetError, match="3 bead names for runs with \\[5\\] beads"):
        build_dataset("ala2", [tmp_path / "ala2_run"], ["C", "N", "CA"], data_dir=tmp_path / "data")
    assert not (tmp_path / "data" / "cln025.npz").exists()
