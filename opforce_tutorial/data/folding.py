"""Chignolin folding analysis: trajectories of every run, a folded reference defined by the data,
folded/unfolded core sets, transition counts, and a Markov state model whose stationary distribution
gives every frame an equilibrium weight.

The steps, with their conventions (lengths in Å, lag times in frames of the runs' saving interval):

1. :func:`.dataset.load_trajectories` reads replica-exchange/plain runs (one trajectory each) and copies
   runs (:mod:`.copies`, one trajectory per copy).
2. :func:`folded_reference` finds the most populated cluster of the data: among ``n_sample`` frames
   drawn evenly, the one with the most neighbours within ``radius`` Å Cα-RMSD (the cluster's medoid);
   the reference is the centroid of those neighbours, each superposed onto the medoid. For CLN025
   this is the β-hairpin; it is compared with the crystal structure only as a check.
3. :func:`.report.count_transitions` counts folding and unfolding events between two core sets with
   hysteresis (RMSD ≤ ``folded_below`` and ≥ ``unfolded_above``): a recrossing of the boundary in
   between does not count.
4. :func:`folding_msm`: 45 Cα–Cα distances → TICA → k-means microstates → reversible maximum-likelihood
   MSM at ``lag`` (deeptime), implied timescales over several lags, a Bayesian MSM for the error of the
   folded fraction, and per-frame weights w = π(s)/N(s) (frames outside the MSM's connected set get 0).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .dataset import Trajectory, load_trajectories, thin_to_common_interval
from .report import count_transitions


def rmsd(x: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Cα-RMSD (Å) of every frame of ``x`` (frames, n, 3) to ``ref`` (n, 3) after optimal superposition (Kabsch)."""
    x = x - x.mean(-2, keepdims=True)
    ref = ref - ref.mean(0)
    cov = np.einsum("fni,nj->fij", x, ref)
    s = np.linalg.svd(cov, compute_uv=False)
    s[:, -1] *= np.sign(np.linalg.det(cov))  # no reflections
    msd = ((x**2).sum((1, 2)) + (ref**2).sum() - 2 * s.sum(1)) / len(ref)
    return np.sqrt(np.maximum(msd, 0.0))


def superpose(x: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """``x`` (n, 3) rotated and translated onto ``ref`` (n, 3) (Kabsch, no reflection)."""
    xc, rc = x - x.mean(0), ref - ref.mean(0)
    u, _, vt = np.linalg.svd(xc.T @ rc)
    d = np.sign(np.linalg.det(u @ vt))
    rot = u @ np.diag([1.0, 1.0, d]) @ vt
    return xc @ rot + ref.mean(0)


def folded_reference(trajectories: list[Trajectory], n_sample: int = 2000, radius: float = 1.0) -> tuple[np.ndarray, dict]:
    """Centroid (Å, centred) of the most populated cluster, and how populated that cluster is."""
    frames = np.concatenate([t.positions for t in trajectories])
    pick = np.linspace(0, len(frames) - 1, min(n_sample, len(frames))).astype(int)
    sample = frames[pick].astype(np.float64)
    counts = np.array([(rmsd(sample, s) < radius).sum() for s in sample])
    best = int(np.argmax(counts))
    medoid = sample[best] - sample[best].mean(0)
    members = sample[rmsd(sample, medoid) < radius]
    ref = np.mean([superpose(m, medoid) for m in members], axis=0)  # the cluster's centroid
    return ref, {"frame_index": int(pick[best]), "neighbours": int(counts[best]), "n_sample": len(sample),
                 "radius_A": radius, "fraction_within_radius": float(counts[best] / len(sample))}


def distance_features(x: np.ndarray) -> np.ndarray:
    """All Cα–Cα distances i < j (Å), (frames, n(n−1)/2)."""
    i, j = np.triu_indices(x.shape[1], k=1)
    return np.linalg.norm(x[:, i] - x[:, j], axis=-1).astype(np.float32)


@dataclass
class FoldingMSM:
    lag: int
    lag_ps: float
    n_microstates: int
    active_fraction: float
    implied_timescales_ns: dict[int, list[float]]
    folded_fraction: float
    folded_fraction_std: float
    weights: list[np.ndarray] = field(repr=False)

    def summary(self) -> dict:
        return {"lag_frames": self.lag, "lag_ps": self.lag_ps, "n_microstates": self.n_microstates,
                "frames_in_connected_set": round(self.active_fraction, 4),
                "implied_timescales_ns": {str(k): v for k, v in self.implied_timescales_ns.items()},
                "folded_fraction": round(self.folded_fraction, 4),
                "folded_fraction_std": round(self.folded_fraction_std, 4)}


def folding_msm(trajectories: list[Trajectory], folded: list[np.ndarray], lag: int = 50, n_microstates: int = 100,
                tica_dim: int = 4, its_lags: tuple[int, ...] = (5, 10, 20, 50, 100), n_samples: int = 100,
                seed: int = 0) -> FoldingMSM:
    """MSM over all trajectories; ``folded`` holds a boolean per frame of each trajectory."""
    from deeptime.clustering import KMeans
    from deeptime.decomposition import TICA
    from deeptime.markov.msm import BayesianMSM, MaximumLikelihoodMSM

    feats = [distance_features(t.positions) for t in trajectories]
    tica = TICA(lagtime=lag, dim=tica_dim).fit(feats).fetch_model()
    proj = [tica.transform(f) for f in feats]
    km = KMeans(n_clusters=n_microstates, max_iter=500, fixed_seed=seed, n_jobs=1).fit(np.concatenate(proj)).fetch_model()
    dtrajs = [km.transform(p).astype(np.int32) for p in proj]
    dt_ns = trajectories[0].save_interval_ps / 1000.0
    its = {}
    for tau in its_lags:
        m = MaximumLikelihoodMSM(lagtime=tau, reversible=True).fit(dtrajs).fetch_model()
        its[tau] = [round(float(t) * dt_ns, 3) for t in m.timescales(k=3)]
    msm = MaximumLikelihoodMSM(lagtime=lag, reversible=True).fit(dtrajs).fetch_model()
    fold_by_state = np.zeros(msm.n_states)
    counts = np.zeros(msm.n_states)
    for d, f in zip(dtrajs, folded):
        s = msm.count_model.transform_discrete_trajectories_to_submodel(d)
        ok = s >= 0
        np.add.at(counts, s[ok], 1.0)
        np.add.at(fold_by_state, s[ok], f[ok].astype(float))
    fold_by_state /= np.maximum(counts, 1.0)
    bayes = BayesianMSM(lagtime=lag, n_samples=n_samples, reversible=True).fit(dtrajs).fetch_model()
    samples = [float(np.dot(s.stationary_distribution, fold_by_state)) for s in bayes.samples]
    weights, active = [], 0
    for d in dtrajs:
        s = msm.count_model.transform_discrete_trajectories_to_submodel(d)
        w = np.where(s >= 0, msm.stationary_distribution[np.maximum(s, 0)] / np.maximum(counts[np.maximum(s, 0)], 1), 0.0)
        weights.append(w)
        active += int((s >= 0).sum())
    total = sum(w.sum() for w in weights)
    weights = [w / total for w in weights]
    return FoldingMSM(lag, lag * trajectories[0].save_interval_ps, msm.n_states, active / sum(len(d) for d in dtrajs),
                      its, float(np.dot(msm.stationary_distribution, fold_by_state)), float(np.std(samples)), weights)


def timescales_converged(its_ns: dict[int, list[float]], tolerance: float = 0.1) -> bool:
    """Implied-timescale check: the slowest timescale changes by less than ``tolerance`` between the two longest lags."""
    lags = sorted(its_ns)
    a, b = its_ns[lags[-2]][0], its_ns[lags[-1]][0]
    return abs(b - a) <= tolerance * b


def analyse_folding(run_dirs: list, folded_below: float = 1.0, unfolded_above: float = 3.0, n_blocks: int = 5,
                    lag: int = 50, check_pdb: str | None = None,
                    trajectories: list[Trajectory] | None = None) -> tuple[dict, np.ndarray, FoldingMSM]:
    """Folding report of the runs, the folded reference (Å) and the MSM (its ``weights`` per trajectory).

    Trajectories are thinned to a common saving interval first (the MSM's lag counts frames);
    ``trajectories``: the runs' already loaded trajectories, if at hand.
    """
    trajs = thin_to_common_interval(load_trajectories(run_dirs) if trajectories is None else trajectories)
    ref, ref_info = folded_reference(trajs)
    dist = [rmsd(t.positions.astype(np.float64), ref) for t in trajs]
    folded = [d <= folded_below for d in dist]
    msm = folding_msm(trajs, folded, lag=lag)
    rows, runs = [], {}
    for t, d in zip(trajs, dist):
        n_unfold, n_fold = count_transitions(d <= folded_below, d >= unfolded_above)
        ns = len(d) * t.save_interval_ps / 1000.0
        rows.append({"source": t.source, "ns": ns, "folded_fraction": round(float((d <= folded_below).mean()), 3),
                     "foldings": n_fold, "unfoldings": n_unfold, "min_rmsd_A": round(float(d.min()), 2)})
        run = t.source.split("/")[0]
        runs.setdefault(run, []).append(d)
    per_run = {}
    for run, ds in runs.items():
        length = min(len(d) for d in ds)  # copies of one run have equal length
        blocks = np.array_split(np.stack([d[:length] for d in ds]) <= folded_below, n_blocks, axis=1)
        per_run[run] = {"trajectories": len(ds), "ns_per_trajectory": length * trajs[0].save_interval_ps / 1000.0,
                        "folded_fraction_per_time_block": [round(float(b.mean()), 3) for b in blocks]}
    report = {
        "temperature_K": trajs[0].temperature, "trajectories": len(trajs), "total_ns": round(sum(r["ns"] for r in rows), 2),
        "folded_definition": f"Cα-RMSD to the folded reference ≤ {folded_below} Å (core sets for transitions: "
                             f"≤ {folded_below} Å folded, ≥ {unfolded_above} Å unfolded)",
        "foldings": sum(r["foldings"] for r in rows), "unfoldings": sum(r["unfoldings"] for r in rows),
        "folded_fraction_raw": round(float(np.concatenate(folded).mean()), 4),
        "msm": {**msm.summary(), "implied_timescales_converged": timescales_converged(msm.implied_timescales_ns)},
        "reference": ref_info, "runs": per_run, "per_trajectory": rows,
    }
    if check_pdb:
        report["reference"]["rmsd_to_check_structure_A"] = round(float(rmsd(ref[None], read_ca_pdb(check_pdb))[0]), 3)
        report["reference"]["check_structure"] = str(check_pdb)
    return report, ref, msm


def write_ca_pdb(path, xyz: np.ndarray, residue_names: list[str]) -> None:
    """A PDB file of Cα beads (Å), one residue each, chain A, with CONECT records along the chain."""
    lines = []
    for i, (name, (x, y, z)) in enumerate(zip(residue_names, xyz), start=1):
        lines.append(f"ATOM  {i:5d}  CA  {name:>3s} A{i:4d}    {x:8.3f}{y:8.3f}{z:8.3f}  1.00  0.00           C")
    lines += [f"CONECT{i:5d}{i + 1:5d}" for i in range(1, len(xyz))]
    with open(path, "w") as f:
        f.write("\n".join(lines + ["END"]) + "\n")


def read_ca_pdb(path) -> np.ndarray:
    """The Cα coordinates (Å) of a PDB file, in file order."""
    return np.array([[float(line[30:38]), float(line[38:46]), float(line[46:54])] for line in open(path)
                     if line.startswith(("ATOM", "HETATM")) and line[12:16].strip() == "CA"])


def write_folding_results(run_dirs: list, residue_names: list[str], data_dir=None) -> dict:
    """``data/cln025.npz`` with MSM weights, the folded reference ``cln025_folded_ca.pdb`` and the report
    ``cln025_folding.json``, all registered with their sha256 in ``data/registry.json``."""
    import json
    import time

    from ..storage import sha256
    from .dataset import DATA_DIR, BUILD_COMMANDS, build_dataset

    data_dir = DATA_DIR if data_dir is None else data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    trajs = thin_to_common_interval(load_trajectories(run_dirs))
    report, ref, msm = analyse_folding(run_dirs, trajectories=trajs)
    pdb, report_path = data_dir / "cln025_folded_ca.pdb", data_dir / "cln025_folding.json"
    write_ca_pdb(pdb, ref, residue_names)
    report_path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    summary = {k: report[k] for k in ("total_ns", "trajectories", "foldings", "unfoldings", "folded_fraction_raw")}
    entry = build_dataset("cln025", run_dirs, residue_names, data_dir, weights=np.concatenate(msm.weights), trajectories=trajs,
                          provenance={"weights": "MSM stationary distribution per frame (see cln025_folding.json)",
                                      **summary, "msm_folded_fraction": report["msm"]["folded_fraction"],
                                      "msm_folded_fraction_std": report["msm"]["folded_fraction_std"],
                                      "msm_implied_timescales_converged": report["msm"]["implied_timescales_converged"]})
    registry_path = data_dir / "registry.json"
    registry = json.loads(registry_path.read_text())
    for key, path in (("cln025-folded-reference", pdb), ("cln025-folding-report", report_path)):
        registry[key] = {"file": path.name, "sha256": sha256(path), "command": BUILD_COMMANDS["cln025"],
                         "created": time.strftime("%Y-%m-%d")}
    registry_path.write_text(json.dumps(registry, indent=2, sort_keys=True) + "\n")
    return entry
