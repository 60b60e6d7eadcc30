"""Chapter 2's pipeline: alanine dipeptide labelled four ways, one CG model per label source, simulated and scored.

Data: ``data/ala2.npz`` (5 backbone heavy atoms C N CA C N, 300 K, Å, kcal/mol/Å; see data/README.md).
Label sources, each at the noise levels :data:`NOISE_STDS` (standard deviations in Å):

* ``reference``: the frames with their mapped atomistic forces (the delta kernel);
* ``noise``: :class:`~opforce_tutorial.kernels.NoiseKernel` with mean-free noise;
* ``coupling``: :class:`~opforce_tutorial.kernels.ReverseNoiseKernel` around a coupling flow (pretrained ``ala2-coupling-<σ>``);
* ``cnf``: the same kernel around :class:`~opforce_tutorial.kernels.cnf.CNFDensity` (pretrained ``ala2-cnf-<σ>``).

Every label source makes the same number of labels (:data:`LABELS`: a kernel labels 4 000 frames 10
times, the reference takes 40 000 frames with their forces); every label source then trains the same CG model (:mod:`opforce_tutorial.cg`) with the same budget, on the
same validation split of source frames, and the model is simulated from the same data frames. Sizes
are CPU-sized (``SMALL_COUPLING``, ``SMALL_EGNN``, :data:`CG_SETTINGS`); every trained object
is a registered pretrained model, rebuilt by ``opforce pretrain <name>``.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from ..cg import ForceMatchingSettings, PriorEnergy, SchNetConfig, SchNetEnergy, fit_priors
from ..cg.network import CGModel
from ..cg.pipeline import CGRunSettings, run_label_source, simulate_cg
from ..catalog import ModelSpec
from ..cg.training import validation_mask
from ..data.dataset import load_dataset, registry_entry, verified_path
from ..data.report import count_transitions
from ..evaluation import (ReferenceHistograms, chain_observables, dihedral_integration_by_parts_check, evaluate,
                          state_populations)
from ..kernels import NoiseKernel, ReverseNoiseKernel
from ..kernels.cnf import SMALL_EGNN, CNFDensity, memory_budget_gb, CNFTraining, EGNNConfig, EGNNVectorField, train_cnf
from ..kernels.coupling import SMALL_COUPLING, CouplingFlow, CouplingFlowConfig, CouplingTraining, train_coupling_flow
from ..labels import LabelSettings, label_frames
from ..systems.alanine_dipeptide import BASINS, SYSTEM, basins, ramachandran
from ..units import kbt as thermal_energy

#: The chapter's noise levels (Å). 0.05 Å is the paper's σ; the stiffest ala2 bonds fluctuate by about
#: 0.025 Å at 300 K, about the Cα–Cα bond fluctuation of the paper's chignolin, so 0.05 Å keeps the paper's
#: ratio of noise to bond width; 0.1 Å doubles it.
NOISE_STDS = (0.05, 0.1)
SOURCES = ("reference", "noise", "coupling", "cnf")
BEAD_TYPES = [0, 1, 2, 3, 4]  # one type per bead along the backbone
COUPLING_STEPS, CNF_STEPS = 4000, 8000
#: The chapter's coupling flow: CPU-sized, with its couplings acting on each bond's displacement in a frame
#: of c's bond and conditioners that also see c's bond lengths and angle cosines. Measured against the
#: authors' parametrisation at the same size and budget (``benchmarks/ala2_ablation.py``, README): bond
#: JS of its outputs 0.003 vs 0.13, angle JS 0.019 vs 0.088 at σ = 0.05 Å.
COUPLING_CONFIG = dict(SMALL_COUPLING, coordinates="bonds", invariant_features=True)
#: Kernel outputs scored by :func:`kernel_output_js` (the output gate): 4 000 frames, one draw each.
OUTPUT_LABELS = LabelSettings(n_frames=4_000, repeats=1, batch_size=256, seed=0)
#: Every label source gets the same budget of 40 000 labels, whatever the size of the dataset: a kernel,
#: the CNF included, labels 4 000 frames drawn at random 10 times (the paper's 10 draws per frame); the
#: reference source takes 40 000 frames with their forces. CNF labels are the costly ones (a backward ODE
#: solve whose exact divergence is differentiated again): ~18 ms each on the 2-core CPU, ~12 minutes in all.
LABELS = LabelSettings(n_frames=4_000, repeats=10, batch_size=256, seed=0)
CG_SETTINGS = CGRunSettings(hidden=64, n_interactions=2, n_rbf=32, cutoff=10.0,
                            force_matching=ForceMatchingSettings(n_steps=3000, batch_size=256, lr=1e-3, eval_every=100,
                                                                 patience=8),
                            n_replicas=64, n_steps=50_000, dt=0.002, friction=1.0, save_every=250, burn_in=2000)
#: The chirality-aware model: :data:`CG_SETTINGS` with a network that also sees the signed dihedrals
#: (``SchNetConfig.dihedral_hidden`` = :data:`CHIRAL_WIDTH`), trained on the reference forces. The
#: distance-only network cannot tell a configuration from its mirror image (αR from its mirror in αL).
CHIRAL_REFERENCE, CHIRAL_WIDTH = "ala2-cg-reference-chiral", 64
#: Results of :func:`record_long_run` (``opforce long-run``), next to the registry in ``models/``.
LONG_RUNS = "long_runs.json"


def kernel_name(source: str, noise_std: float) -> str:
    return f"ala2-{source}-{noise_std:g}"


def cg_name(source: str, noise_std: float | None = None) -> str:
    return "ala2-cg-reference" if source == "reference" else f"ala2-cg-{source}-{noise_std:g}"


def make_kernel(source: str, noise_std: float, kbt: float, flow: torch.nn.Module | None = None, device="cpu"):
    """The kernel of a label source; ``flow`` is the trained coupling flow or CNF vector field.

    CNF labels are solved in chunks planned from the device's memory budget
    (:func:`~opforce_tutorial.kernels.cnf.memory_budget_gb`).
    """
    if source == "noise":
        return NoiseKernel(noise_std, kbt, mean_free=True)
    if source == "coupling":
        return ReverseNoiseKernel(flow, noise_std, kbt, mean_free=True)
    if source == "cnf":
        return ReverseNoiseKernel(CNFDensity(flow, noise_std, memory_budget_gb=memory_budget_gb(device)), noise_std, kbt,
                                  mean_free=True)
    raise ValueError(f"no kernel for label source {source!r}; kernels are noise, coupling and cnf")


def labelled_set(source: str, noise_std: float | None, dataset, flow=None, settings: LabelSettings = LABELS,
                 device="cpu", progress: bool = True, work_dir: Path | None = None):
    """(positions, labels, source frame index) of a label source over the dataset.

    Kernel labels are written to ``work_dir/labels.npz`` (resumable) when given, else to a temporary folder.
    """
    if source == "reference":  # as many frames as a kernel makes labels, chosen by the same seeded rule
        n = min(dataset.n_frames, settings.frames_to_keep(dataset.n_frames) * settings.repeats)
        idx = np.sort(np.random.default_rng(settings.seed).choice(dataset.n_frames, n, replace=False))
        return dataset.positions[idx], dataset.forces[idx], idx
    kernel = make_kernel(source, noise_std, thermal_energy(dataset.temperature), flow, device)
    with tempfile.TemporaryDirectory() as tmp:
        out = label_frames(dataset.positions, kernel, dataset.temperature, Path(work_dir or tmp) / "labels.npz",
                           settings, device, progress=progress)
    return out.positions, out.forces, out.frame_index


def training_frames():
    """``data/ala2.npz`` (verified) as an unweighted equilibrium sample: the frames every label source,
    flow and CG model of the chapter uses (:meth:`~opforce_tutorial.data.dataset.CGDataset.equilibrium_frames`;
    the dataset's basin weights, if any, become repeated frames)."""
    return load_dataset("ala2").equilibrium_frames()


def reference_histograms() -> ReferenceHistograms:
    """The saved reference histograms of every ala2 observable (verified like a dataset)."""
    return ReferenceHistograms.load(verified_path("ala2-histograms"))


def score(trajectory, reference: ReferenceHistograms) -> dict:
    """JS divergences (with floors) of every observable and basin populations of a CG trajectory."""
    return {"js": evaluate(trajectory, reference, SYSTEM.observables), "populations": basin_populations(trajectory)}


def basin_populations(frames, n_blocks: int = 10) -> dict[str, dict[str, float]]:
    """β/PII, αR and αL populations with block errors (:func:`~opforce_tutorial.evaluation.state_populations`
    of alanine dipeptide's :func:`~opforce_tutorial.systems.alanine_dipeptide.basins`)."""
    return state_populations(frames, basins, n_blocks)


def prior_only_trajectory(ds=None, prior=None, progress: bool = False) -> np.ndarray:
    """The baseline of every CG model: its prior alone (fitted to the training frames, no network),
    simulated with the chapter's simulation settings (:data:`CG_SETTINGS`, seed 0).

    What a trained model adds to the global free energy is measured against this. ``ds`` and
    ``prior``: the :func:`training_frames` and the prior fitted to them, if at hand (default: load, fit).
    """
    ds = training_frames() if ds is None else ds
    kbt = thermal_energy(ds.temperature)
    prior = fit_priors(ds.positions, kbt)[0] if prior is None else prior
    return simulate_cg(prior, ds.positions, kbt, ds.bead_masses, CG_SETTINGS, progress=progress)


def basin_exchange(trajectory) -> dict:
    """Is a CG simulation (time, replicas, 5, 3) long enough for the populations it reports?

    Counts, over all replicas, how many start in αL and how often the replicas enter and leave it
    (committed to αL at φ > 20°, to the rest at φ < −20°, as the data's αL visits), the mean number of
    changes between αR and β per replica (committed to the basin last visited), and the αL and αR
    populations (%) in the first and second half of the saved time. A population that drifts between the
    halves, or an αL population carried by the replicas that started there with few entries and exits,
    is set by the starts (data frames) and the simulation's length, not by the model's free energy.
    """
    traj = np.asarray(trajectory)
    if traj.ndim != 4 or traj.shape[2:] != (5, 3):
        raise ValueError(f"expected a simulation of shape (time, replicas, 5, 3), got {traj.shape}")
    n_time, n_rep = traj.shape[:2]
    phi, psi = ramachandran(traj.reshape(-1, 5, 3))
    phi, psi = phi.reshape(n_time, n_rep), psi.reshape(n_time, n_rep)
    in_ar, in_b = BASINS["αR"](phi, psi), BASINS["β / PII"](phi, psi)
    exits = entries = ar_b = 0
    for r in range(n_rep):
        out, into = count_transitions(phi[:, r] > 20, phi[:, r] < -20)
        exits, entries = exits + out, entries + into
        ar_b += sum(count_transitions(in_ar[:, r], in_b[:, r]))
    half = n_time // 2
    row = {"replicas": n_rep, "starting in αL": int((phi[0] > 0).sum()), "αL entries": entries, "αL exits": exits,
           "αR ↔ β changes per replica": ar_b / n_rep}
    for basin in ("αL (φ > 0)", "αR"):
        short = basin.split()[0]
        for name, sl in (("first half", slice(0, half)), ("second half", slice(half, None))):
            row[f"{short} % {name}"] = 100 * float(BASINS[basin](phi[sl], psi[sl]).mean())
    return row


def model_dihedral_checks(models: dict, frames, kbt: float, batch_size: int = 4096):
    """The dihedral integration-by-parts check of every CG model's forces at the data's ``frames``.

    A model whose Boltzmann density were the data's would pass it: its forces at the data's frames
    would satisfy ⟨F·∇h⟩ = −k_BT⟨Δh⟩ for every h
    (:func:`~opforce_tutorial.evaluation.dihedral_integration_by_parts_check`, h = cos and sin of φ and ψ).
    The difference is k_BT⟨∇ log(p_model/p_data) · ∇h⟩ over the data: it sees where the model's
    density differs from the data's *along* the frames, and little of a difference in weight between
    basins separated by a sparsely sampled barrier. No simulation is needed. Returns a DataFrame of z
    values, one row per model (the keys of ``models``), one column per test function.
    """
    import pandas as pd

    x = torch.as_tensor(np.asarray(frames, dtype=np.float32))
    forces = {name: model.forces_in_batches(x, batch_size).numpy() for name, model in models.items()}
    checks = dihedral_integration_by_parts_check(np.asarray(frames), forces, kbt)
    names = {"cos dihedral 0-1-2-3": "cos φ", "sin dihedral 0-1-2-3": "sin φ",
             "cos dihedral 1-2-3-4": "cos ψ", "sin dihedral 1-2-3-4": "sin ψ"}
    return pd.DataFrame({name: {f"z {names.get(r['function'], r['function'])}": r["z"] for r in rows}
                         for name, rows in checks.items()}).T


def long_run(model: CGModel, ns: float = 1.0, device="cpu", progress: bool = True,
             checkpoint: str | None = None) -> dict:
    """A chapter CG model simulated as its registration did (:data:`CG_SETTINGS`, seed 0: the same 64
    starting frames) but for ``ns`` nanoseconds per replica.

    Returns its :func:`basin_exchange` and :func:`basin_populations`
    (fractions with block errors over the replicas). At 2 fs and 20 000 replica-steps/s (this chapter's
    model on one CPU core) 1 ns of 64 replicas takes about half an hour; with ``checkpoint`` a killed run
    resumes.
    """
    if ns <= 0:
        raise ValueError(f"ns must be positive, got {ns}")
    ds = training_frames()
    settings = replace(CG_SETTINGS, n_steps=int(round(ns * 1000 / CG_SETTINGS.dt)))
    traj = simulate_cg(model, ds.positions, thermal_energy(ds.temperature), ds.bead_masses, settings, device, progress,
                       checkpoint)
    return {"exchange": basin_exchange(traj), "populations": basin_populations(traj)}


def record_long_run(name: str, ns: float = 1.0, device="cpu", models_dir: Path | None = None) -> dict:
    """:func:`long_run` of the registered model ``name`` (weights verified by sha256), recorded in
    ``models/long_runs.json`` under its name and length with the sha256 of the weights, the command,
    the device and the wall time."""
    import time

    import shutil

    from ..pretrained import MODELS_DIR, device_name, load, record_entry, work_dir

    models_dir = MODELS_DIR if models_dir is None else models_dir
    model, registered = load(name, models_dir)
    t0 = time.perf_counter()
    work = work_dir(models_dir, f"long-run-{name}-{ns:g}ns")  # a killed run resumes from here
    result = long_run(model, ns, device, checkpoint=str(work / "simulation.ckpt"))
    entry = {**result, "ns_per_replica": ns, "model_sha256": registered["sha256"],
             "wall_time_s": round(time.perf_counter() - t0, 1), "device": device_name(device),
             "command": f"opforce long-run {name} --ns {ns:g}" + (f" --device {device}" if device != "cpu" else ""),
             "created": time.strftime("%Y-%m-%d")}
    record_entry(models_dir / LONG_RUNS, name, f"{ns:g}", entry)
    shutil.rmtree(work, ignore_errors=True)
    return entry


def long_runs(models_dir: Path | None = None) -> dict:
    """``{model name: {ns: entry}}`` of the recorded :func:`record_long_run` results that belong to the
    registered weights (a retrained model leaves its older long runs out)."""
    from ..pretrained import MODELS_DIR, read_registry, replicates_of

    models_dir = MODELS_DIR if models_dir is None else models_dir
    current = replicates_of(read_registry(models_dir / "registry.json"), read_registry(models_dir / LONG_RUNS))
    return {name: runs for name, runs in current.items() if runs}


def long_run_summary(run: dict, data_alpha_l: dict) -> tuple[dict, dict]:
    """A recorded long run (:func:`long_runs`) as a table row and as pre-formatted text for the chapter.

    ``data_alpha_l``: the reference data's αL population, ``{"mean", "block_error"}`` (fractions). In the
    text, ``drift`` says how the run's αL population moved from the first half of the run to the second:
    "held" when the change is within two block errors of the whole run's αL population, else "rose" or
    "fell"; ``versus`` compares it with the data's: "matches" within two combined block errors, else
    "exceeds" or "falls short of"; ``ratio`` is the run's αL population over the data's.
    """
    x, p = run["exchange"], run["populations"]
    al, al_err = 100 * p["αL (φ > 0)"]["mean"], 100 * p["αL (φ > 0)"]["block_error"]
    data, data_err = 100 * data_alpha_l["mean"], 100 * data_alpha_l["block_error"]
    versus = ("matches" if abs(al - data) <= 2 * np.hypot(al_err, data_err)
              else ("exceeds" if al > data else "falls short of"))
    first, second = x["αL % first half"], x["αL % second half"]
    drift = "held" if abs(second - first) <= 2 * al_err else ("rose" if second > first else "fell")
    row = {"starting in αL": x["starting in αL"], "αL entries": x["αL entries"], "αL exits": x["αL exits"],
           **{f"{basin} %": f"{100 * p[basin]['mean']:.1f} ± {100 * p[basin]['block_error']:.1f}"
              for basin in ("αL (φ > 0)", "αR", "β / PII")},
           "αL % first half": f"{first:.1f}", "αL % second half": f"{second:.1f}",
           "wall time (min)": f"{run['wall_time_s'] / 60:.0f}"}
    text = {"aL": f"{al:.1f}", "aLerr": f"{al_err:.1f}", "aR": f"{100 * p['αR']['mean']:.0f}",
            "entries": str(x["αL entries"]), "exits": str(x["αL exits"]), "first": f"{first:.0f}",
            "second": f"{second:.0f}", "drift": drift, "versus": versus, "ratio": f"{al / data:.1f}"}
    return row, text


def cg_model_names() -> list[str]:
    """The chapter's 7 CG models: reference forces, then noise, coupling, CNF at each noise level."""
    return [cg_name("reference")] + [cg_name(s, g) for g in NOISE_STDS for s in ("noise", "coupling", "cnf")]


def seed_metrics(models_registry: dict | None = None, replicates: dict | None = None, names: list[str] | None = None):
    """The scores of the CG models ``names`` (default :func:`cg_model_names`) per training seed, one row
    per (model, seed), as a DataFrame.

    Seed 0 is the registered model (``models/registry.json``); other seeds are its replicates recorded
    for the same registered weights (``opforce replicate``, :func:`~.pretrained.replicates_of`).
    Columns: basin populations (%), Ramachandran JS and the mean JS over the bonds and over the angles (nats).
    """
    import pandas as pd

    from ..pretrained import read_registry, read_replicates, replicates_of

    registry = read_registry() if models_registry is None else models_registry
    replicates = replicates_of(registry, read_replicates() if replicates is None else replicates)
    rows = []
    for name in cg_model_names() if names is None else names:
        runs = {0: registry[name]["metrics"]} | {int(seed): r["metrics"] for seed, r in replicates.get(name, {}).items()}
        for seed, m in sorted(runs.items()):
            js = m["js"]
            rows.append({"model": name, "seed": seed,
                         **{f"{basin} %": 100 * p["mean"] for basin, p in m["populations"].items()},
                         "JS ramachandran": js["ramachandran"]["js"],
                         "mean JS bonds": float(np.mean([v["js"] for k, v in js.items() if k.startswith("bond")])),
                         "mean JS angles": float(np.mean([v["js"] for k, v in js.items() if k.startswith("angle")]))})
    return pd.DataFrame(rows)


def seed_anova(seeds, column: str = "αR %", names: list[str] | None = None) -> tuple[float, float]:
    """Do the models ``names`` (default: all in ``seeds``) differ in ``column`` beyond their spread over
    training seeds? One-way ANOVA on :func:`seed_metrics` rows: F, the ratio of the between-model to
    the within-model (seed) variance, and its p-value (the chance of an F at least this large if every
    model had the same mean). Needs two seeds or more of at least two models."""
    from scipy.stats import f_oneway

    names = list(dict.fromkeys(seeds["model"])) if names is None else names
    groups = [seeds.loc[seeds["model"] == name, column].to_numpy() for name in names]
    if len(groups) < 2 or min(len(g) for g in groups) < 2:
        raise ValueError(f"need at least two seeds of at least two models, got {dict(zip(names, map(len, groups)))}")
    result = f_oneway(*groups)
    return float(result.statistic), float(result.pvalue)


# ---------------------------------------------------------------------------------- registered models
def _fit_flow(ds, source: str, noise_std: float, seed: int, device, work_dir: Path | None = None):
    """The coupling flow or CNF vector field of a label source, trained on the frames of ``ds``
    (:func:`training_frames`) with ``seed`` (0: the registered one); checkpointed in ``work_dir``.

    Returns ``(flow, config, settings, metrics)``.
    """
    checkpoint = None if work_dir is None else str(Path(work_dir) / "flow.ckpt")
    if source == "coupling":
        config = CouplingFlowConfig(bead_types=BEAD_TYPES, **COUPLING_CONFIG)
        settings = CouplingTraining(noise_std=noise_std, n_steps=COUPLING_STEPS, batch_size=256, seed=seed)
        flow, history = train_coupling_flow(ds.positions, config, settings, device, checkpoint)
    else:
        config = EGNNConfig(bead_types=BEAD_TYPES, **SMALL_EGNN)
        settings = CNFTraining(noise_std=noise_std, prior_std=noise_std, n_steps=CNF_STEPS, batch_size=256, seed=seed)
        flow, history = train_cnf(ds.positions, config, settings, device, checkpoint)
    metrics = {"final_val_loss": history["val_loss"][-1], "val_loss": history["val_loss"],
               "dataset_sha256": _dataset_sha()}
    return flow, config, settings, metrics


def kernel_output_js(source: str, noise_std: float, flow, ds=None, device="cpu") -> dict:
    """JS (with floors) of the bonds and angles of a kernel's labelled positions y against the data:
    ``{observable: {"js", "js_floor", "n_samples"}}`` for :data:`OUTPUT_LABELS` (4 000 frames, one draw)."""
    ds = training_frames() if ds is None else ds
    y, _, _ = labelled_set(source, noise_std, ds, flow, OUTPUT_LABELS, device=device, progress=False)
    names = [n for n in chain_observables(5) if n.split()[0] in ("bond", "angle")]
    return evaluate(y, reference_histograms(), names)


def _train_flow(source: str, noise_std: float):
    def train(device, work_dir=None):
        ds = training_frames()
        flow, config, settings, metrics = _fit_flow(ds, source, noise_std, 0, device, work_dir)
        metrics["output_js"] = kernel_output_js(source, noise_std, flow.eval(), ds, device)
        return flow.cpu(), asdict(config), asdict(settings), metrics, None

    return train


def _dataset_sha() -> str:
    return registry_entry("ala2")["sha256"]


def models_trained_on_other_data(models_registry: dict | None = None) -> list[str]:
    """Chapter 2's registered models whose recorded training data is not the shipped ``data/ala2.npz``.

    Every flow and CG model records the sha256 of the dataset it was trained on; after the dataset is
    rebuilt (more MD) these are the models ``opforce pretrain`` should retrain.
    """
    from ..pretrained import read_registry

    registry = read_registry() if models_registry is None else models_registry
    current = _dataset_sha()
    return sorted(name for name, entry in registry.items()
                  if name.startswith("ala2-") and entry.get("metrics", {}).get("dataset_sha256") != current)


def _cg_run(ds, source: str, noise_std: float | None, flow, seed: int, device, dihedral_hidden: int = 0,
            label_settings: LabelSettings | None = None, cg_settings: CGRunSettings | None = None,
            work_dir: Path | None = None):
    """Labels → CG model → simulation → scores for one label source on the frames of ``ds``
    (:func:`training_frames`) with ``cg_settings`` (and a network with ``dihedral_hidden``), every
    random choice seeded by ``seed``.

    ``seed`` picks the labelled frames and kernel draws, the network's initialisation and batches, and the
    simulation's starts and noise; seed 0 is the registered model. The registered models use
    :data:`LABELS` and :data:`CG_SETTINGS` (the defaults); other settings are for ablations
    (``benchmarks/ala2_ablation.py``). Labels and the force-matching checkpoint go to ``work_dir`` (if
    given), so a killed run resumes. Returns ``(CGRun, metrics, settings)``.
    """
    label_settings = LABELS if label_settings is None else label_settings  # read at call time (tests patch them)
    cg_settings = CG_SETTINGS if cg_settings is None else cg_settings
    labels = replace(label_settings, seed=seed)
    cg = replace(cg_settings, seed=seed, force_matching=replace(cg_settings.force_matching, seed=seed),
                 dihedral_hidden=dihedral_hidden)
    y, f, idx = labelled_set(source, noise_std, ds, flow, labels, device=device, work_dir=work_dir)
    run = run_label_source(y, f, thermal_energy(ds.temperature), BEAD_TYPES, ds.bead_masses, ds.positions, cg,
                           val_mask=validation_mask(idx, ds.n_frames, 0.1, ds.traj_ids), device=device,
                           checkpoint=None if work_dir is None else str(Path(work_dir) / "cg.ckpt"))
    scores = score(run.trajectory, reference_histograms())
    metrics = {"n_labels": len(y), "best_val_force_mse": min(run.history["val_loss"]),
               "best_step": run.history["best_step"], "js": scores["js"], "populations": scores["populations"],
               "dataset_sha256": _dataset_sha()}
    return run, metrics, {"labels": asdict(labels), "cg": asdict(cg)}


def _train_cg(source: str, noise_std: float | None, dihedral_hidden: int = 0):
    def train(device, work_dir=None):
        from ..pretrained import load_or_train

        flow = load_or_train(kernel_name(source, noise_std), device=device) if source in ("coupling", "cnf") else None
        flow = None if flow is None else flow.to(device)
        run, metrics, training = _cg_run(training_frames(), source, noise_std, flow, 0, device, dihedral_hidden,
                                         work_dir=work_dir)
        config = {"n_beads": 5, "n_fourier": run.model.prior.n_fourier, "schnet": asdict(run.model.net.config)}
        return run.model.cpu(), config, training, metrics, run.trajectory

    return train


def _replicate_cg(source: str, noise_std: float | None, dihedral_hidden: int = 0):
    def replicate(seed, device, work_dir=None):
        """Metrics of the whole pipeline of a CG model (its kernel's flow included) rerun with ``seed``."""
        ds, metrics, flow = training_frames(), {}, None
        if source in ("coupling", "cnf"):
            flow, _, _, flow_metrics = _fit_flow(ds, source, noise_std, seed, device, work_dir)
            metrics["flow_final_val_loss"] = flow_metrics["final_val_loss"]
        return {**_cg_run(ds, source, noise_std, flow, seed, device, dihedral_hidden, work_dir=work_dir)[1], **metrics}

    return replicate


def _build_cg(config: dict) -> CGModel:
    return CGModel(PriorEnergy(config["n_beads"], config["n_fourier"]), SchNetEnergy(SchNetConfig(**config["schnet"])))


def recipes() -> dict[str, ModelSpec]:
    """Chapter 2's recipes for the catalog (:mod:`opforce_tutorial.catalog`): flows and CG models."""
    model_spec = ModelSpec
    specs = {}
    for sigma in NOISE_STDS:
        specs[kernel_name("coupling", sigma)] = model_spec(
            train=_train_flow("coupling", sigma), file=f"ala2_coupling_{sigma:g}.pt",
            build=lambda cfg: CouplingFlow(CouplingFlowConfig(**cfg)))
        specs[kernel_name("cnf", sigma)] = model_spec(
            train=_train_flow("cnf", sigma), file=f"ala2_cnf_{sigma:g}.pt",
            build=lambda cfg: EGNNVectorField(EGNNConfig(**cfg)))
        for source in ("noise", "coupling", "cnf"):
            specs[cg_name(source, sigma)] = model_spec(train=_train_cg(source, sigma), build=_build_cg,
                                                       file=f"ala2_cg_{source}_{sigma:g}.pt",
                                                       replicate=_replicate_cg(source, sigma))
    specs[cg_name("reference")] = model_spec(train=_train_cg("reference", None), build=_build_cg,
                                             file="ala2_cg_reference.pt", replicate=_replicate_cg("reference", None))
    specs[CHIRAL_REFERENCE] = model_spec(train=_train_cg("reference", None, CHIRAL_WIDTH), build=_build_cg,
                                         file="ala2_cg_reference_chiral.pt",
                                         replicate=_replicate_cg("reference", None, CHIRAL_WIDTH))
    return specs
