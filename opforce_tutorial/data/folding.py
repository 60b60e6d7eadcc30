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
3. :func:`opforce_tutorial.analysis.count_transitions` counts folding and unfolding events between two core sets with
   hysteresis (RMSD ≤ ``folded_below`` and ≥ ``unfolded_above``): a recrossing of the boundary in
   between does not count.
4. :func:`folding_msm`: 45 Cα–Cα distances → TICA → k-means microstates → reversible maximum-likelihood
   MSM at ``lag`` (deeptime), implied timescales over several lags, a Bayesian MSM and a block bootstrap
   (:func:`block_bootstrap`) for the errors of the folded fraction and the timescales, and per-frame
   weights w = π(s)/N(s) (frames outside the MSM's connected set get 0).
   The TICA dimension is chosen by cross-validation (:func:`tica_dimension_scores`): more dimensions
   resolve more slow processes, but a process seen in a single trajectory is noise, not kinetics.
5. :func:`melting_curve`: the folded fraction at other temperatures, reweighting each state's frames
   with their potential energies (runs that saved them), anchored on the MSM's folded fraction.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..analysis import count_transitions
from ..structures import read_ca_pdb, rmsd, superpose, write_ca_pdb
from ..units import KB_KCAL_PER_MOL_K
from .dataset import Trajectory, load_trajectories, thin_to_common_interval


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


def _msm(dtrajs: list[np.ndarray], lag: int):
    """Reversible maximum-likelihood MSM at ``lag`` on the largest connected set of ``dtrajs``."""
    from deeptime.markov.msm import MaximumLikelihoodMSM

    return MaximumLikelihoodMSM(lagtime=lag, reversible=True, use_lcc=True).fit(dtrajs).fetch_model()


def _discretise(train: list[np.ndarray], apply: list[np.ndarray], lag: int, tica_dim: int, n_microstates: int, seed: int):
    """TICA (``tica_dim``) and k-means fitted on ``train``; the microstate trajectories of ``apply``."""
    from deeptime.clustering import KMeans
    from deeptime.decomposition import TICA

    tica = TICA(lagtime=lag, dim=tica_dim).fit(train).fetch_model()
    km = KMeans(n_clusters=n_microstates, max_iter=500, fixed_seed=seed, n_jobs=1)
    km = km.fit(np.concatenate([tica.transform(f) for f in train])).fetch_model()
    return [km.transform(tica.transform(f)).astype(np.int32) for f in apply]


def tica_dimension_scores(features: list[np.ndarray], dims=(1, 2, 3, 4), lag: int = 150, n_microstates: int = 100,
                          block_frames: int = 1000, n_repeats: int = 6, score_dim: int = 3, seed: int = 0) -> dict:
    """Cross-validated VAMP-2 score of the whole MSM pipeline for each TICA dimension.

    Trajectories are cut into blocks of ``block_frames``; each repeat fits TICA, k-means and the MSM on a
    random half of the blocks and scores it on the other half (VAMP-2 over the ``score_dim`` largest
    singular values, the constant one included). A slow process seen in one trajectory only does not
    carry over to the held-out half, so it lowers the score instead of raising it.
    Returns ``{dim: (mean, standard error)}``.
    """
    blocks = [b for f in features for b in np.array_split(f, max(1, len(f) // block_frames))]
    if len(blocks) < 4:
        raise ValueError(f"cross-validation needs at least 4 blocks of {block_frames} frames, got {len(blocks)}")
    rng = np.random.default_rng(seed)
    splits = [rng.permutation(len(blocks)) for _ in range(n_repeats)]
    scores = {}
    for dim in dims:
        s = []
        for perm in splits:
            train, test = [blocks[i] for i in perm[::2]], [blocks[i] for i in perm[1::2]]
            d = _discretise(train, train + test, lag, dim, n_microstates, seed)
            msm = _msm(d[:len(train)], lag)
            s.append(msm.score(d[len(train):], r=2, dim=score_dim))
        scores[dim] = (float(np.mean(s)), float(np.std(s, ddof=1) / np.sqrt(len(s))))
    return scores


def smallest_good_dimension(scores: dict) -> int:
    """One-standard-error rule: the smallest dimension scoring within one standard error of the best."""
    best = max(scores, key=lambda d: scores[d][0])
    return min(d for d, (m, _) in scores.items() if m >= scores[best][0] - scores[best][1])


@dataclass
class FoldingMSM:
    lag: int
    lag_ps: float
    tica_dim: int
    tica_dim_scores: dict[int, tuple[float, float]]
    n_microstates: int
    active_fraction: float
    implied_timescales_ns: dict[int, list[float]]
    slowest_process_folded_correlation: float
    folded_ck_test: dict[int, tuple[float, float]]
    folded_fraction: float
    folded_fraction_std: float  # Bayesian MSM: the error of the counts, given the microstates
    folded_fraction_bootstrap_std: float  # block bootstrap: also the error of which states the runs explored
    slowest_its_bootstrap_ns: dict[int, tuple[float, float]]  # 95 % block-bootstrap interval per lag
    long_lag_timescales: dict[int, dict]  # diagnostic only: {lag: {"its_ns", "trajectories_longer"}}
    weights: list[np.ndarray] = field(repr=False)

    def summary(self) -> dict:
        return {"lag_frames": self.lag, "lag_ps": self.lag_ps, "tica_dim": self.tica_dim,
                "tica_dim_cross_validated_vamp2": {str(k): [round(m, 3), round(e, 3)]
                                                   for k, (m, e) in self.tica_dim_scores.items()},
                "n_microstates": self.n_microstates,
                "frames_in_connected_set": round(self.active_fraction, 4),
                "implied_timescales_ns": {str(k): v for k, v in self.implied_timescales_ns.items()},
                "slowest_process_folded_correlation": round(self.slowest_process_folded_correlation, 3),
                "folded_ck_test": {str(k): [round(p, 3), round(e, 3)] for k, (p, e) in self.folded_ck_test.items()},
                "folded_fraction": round(self.folded_fraction, 4),
                "folded_fraction_std": round(self.folded_fraction_std, 4),
                "folded_fraction_bootstrap_std": round(self.folded_fraction_bootstrap_std, 4),
                "slowest_implied_timescale_bootstrap_95_ns": {str(k): [round(lo, 3), round(hi, 3)]
                                                              for k, (lo, hi) in self.slowest_its_bootstrap_ns.items()},
                "implied_timescales_long_lags_diagnostic": {str(k): v for k, v in self.long_lag_timescales.items()}}


def _folded_by_state(msm, dtrajs: list[np.ndarray], folded: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per state of ``msm``'s connected set: the fraction of its frames that are folded, and its frame count."""
    fold_by_state, counts = np.zeros(msm.n_states), np.zeros(msm.n_states)
    for d, f in zip(dtrajs, folded):
        s = msm.count_model.transform_discrete_trajectories_to_submodel(d)
        ok = s >= 0
        np.add.at(counts, s[ok], 1.0)
        np.add.at(fold_by_state, s[ok], f[ok].astype(float))
    return fold_by_state / np.maximum(counts, 1.0), counts


def _stay_folded(msm, fold_by_state: np.ndarray, steps: int = 1) -> float:
    """P(folded after ``steps`` lags | folded now) of ``msm``: the folded frames' microstate distribution
    (π(s) f(s), f = ``fold_by_state``, the folded fraction of the frames in s) propagated by T^steps and
    weighted by f."""
    start = msm.stationary_distribution * fold_by_state
    return float(start @ np.linalg.matrix_power(msm.transition_matrix, steps) @ fold_by_state / start.sum())


def block_bootstrap(dtrajs: list[np.ndarray], folded: list[np.ndarray], lag: int, its_lags=(), block_frames: int = 1000,
                    n_boot: int = 100, seed: int = 0) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """Folded fraction and slowest implied timescale (frames) of MSMs refitted to block-bootstrap resamples.

    Each trajectory is cut into blocks of about ``block_frames`` (a shorter one stays whole); each of
    ``n_boot`` resamples draws as many blocks with replacement and fits a reversible maximum-likelihood
    MSM at ``lag`` (folded fraction) and at every lag of ``its_lags`` (slowest timescale), on the same
    microstates. Unlike the Bayesian MSM, whose error assumes the observed transitions are a fair sample
    of every state's exits, this also counts how much the answer depends on which stretches of which
    runs were sampled: a state left only once, by one run, makes the resamples disagree.
    Returns (folded fractions ``(n_boot,)``, ``{its lag: slowest timescales (n_boot,)}``).
    """
    blocks = [(d_block, f_block) for d, f in zip(dtrajs, folded)
              for d_block, f_block in zip(np.array_split(d, max(1, len(d) // block_frames)),
                                          np.array_split(f, max(1, len(f) // block_frames)))]
    rng = np.random.default_rng(seed)
    fractions, its = [], {tau: [] for tau in its_lags}
    for _ in range(n_boot):
        pick = rng.integers(len(blocks), size=len(blocks))
        d, f = [blocks[i][0] for i in pick], [blocks[i][1] for i in pick]
        msm = _msm(d, lag)
        fractions.append(float(msm.stationary_distribution @ _folded_by_state(msm, d, f)[0]))
        for tau in its_lags:
            m = msm if tau == lag else _msm(d, tau)
            its[tau].append(float(m.timescales(k=1)[0]))
    return np.array(fractions), {tau: np.array(v) for tau, v in its.items()}


def folding_msm(trajectories: list[Trajectory], folded: list[np.ndarray], lag: int = 150, n_microstates: int = 100,
                tica_dims: tuple[int, ...] = (1, 2, 3, 4), its_lags: tuple[int, ...] = (10, 20, 50, 100, 150, 200, 300),
                ck_steps: tuple[int, ...] = (1, 2, 3, 4), n_samples: int = 100, cv_block_frames: int = 1000,
                n_boot: int = 100, long_lags: tuple[int, ...] = (400, 500, 700), seed: int = 0) -> FoldingMSM:
    """MSM over all trajectories; ``folded`` holds a boolean per frame of each trajectory.

    The TICA dimension is chosen from ``tica_dims`` by :func:`tica_dimension_scores` and
    :func:`smallest_good_dimension` (one value: used as given, no cross-validation). The slowest
    process is identified by the correlation of its right eigenvector with the folded indicator
    (stationary weights; ±1: the folding process).

    Chapman–Kolmogorov test of the folded set: for k in ``ck_steps``, the probability to be folded
    k lags after being folded, predicted by the MSM at ``lag`` (T^k) and estimated by an MSM at k·lag;
    ``folded_ck_test[k] = (predicted, estimated)``.

    Two errors of the folded fraction: the Bayesian MSM's (``n_samples``) and a :func:`block_bootstrap`
    over blocks of ``cv_block_frames`` (``n_boot``), which also gives 95 % intervals of the slowest
    implied timescale at the lags of ``its_lags`` from ``lag`` on.

    ``long_lags``: implied timescales at lags beyond ``its_lags``, a diagnostic only (the check of
    :func:`timescales_converged` uses ``its_lags``): only trajectories longer than the lag give counts
    there, so short runs (e.g. the GPU copies) drop out; each entry says how many trajectories remain.
    """
    from deeptime.markov.msm import BayesianMSM

    feats = [distance_features(t.positions) for t in trajectories]
    scores = (tica_dimension_scores(feats, tica_dims, lag, n_microstates, cv_block_frames, seed=seed)
              if len(tica_dims) > 1 else {})
    tica_dim = smallest_good_dimension(scores) if scores else tica_dims[0]
    dtrajs = _discretise(feats, feats, lag, tica_dim, n_microstates, seed)
    dt_ns = trajectories[0].save_interval_ps / 1000.0
    fits = {}  # one MSM per lag: the ITS, the CK test and the main model share lags

    def fit(tau):
        if tau not in fits:
            fits[tau] = _msm(dtrajs, tau)
        return fits[tau]

    def timescales_ns(tau):
        return [round(float(t) * dt_ns, 3) for t in fit(tau).timescales(k=3)]

    its = {tau: timescales_ns(tau) for tau in its_lags}
    long_its = {tau: {"its_ns": timescales_ns(tau), "trajectories_longer": sum(len(d) > tau for d in dtrajs)}
                for tau in long_lags if any(len(d) > tau for d in dtrajs)}
    msm = fit(lag)
    fold_by_state, counts = _folded_by_state(msm, dtrajs, folded)
    pi = msm.stationary_distribution
    slow = msm.eigenvectors_right(2)[:, 1]
    cov = np.cov(slow, fold_by_state, aweights=pi)
    correlation = float(cov[0, 1] / np.sqrt(cov[0, 0] * cov[1, 1]))
    ck = {}
    for k in ck_steps:
        msm_k = fit(k * lag)
        ck[k] = (_stay_folded(msm, fold_by_state, k), _stay_folded(msm_k, _folded_by_state(msm_k, dtrajs, folded)[0]))
    bayes = BayesianMSM(lagtime=lag, n_samples=n_samples, reversible=True).fit(dtrajs).fetch_model()
    samples = [float(np.dot(s.stationary_distribution, fold_by_state)) for s in bayes.samples]
    boot_lags = tuple(tau for tau in its_lags if tau >= lag)
    boot_fractions, boot_its = block_bootstrap(dtrajs, folded, lag, boot_lags, cv_block_frames, n_boot, seed)
    weights, active = [], 0
    for d in dtrajs:
        s = msm.count_model.transform_discrete_trajectories_to_submodel(d)
        w = np.where(s >= 0, pi[np.maximum(s, 0)] / np.maximum(counts[np.maximum(s, 0)], 1), 0.0)
        weights.append(w)
        active += int((s >= 0).sum())
    total = sum(w.sum() for w in weights)
    weights = [w / total for w in weights]
    return FoldingMSM(lag, lag * trajectories[0].save_interval_ps, tica_dim, scores, msm.n_states,
                      active / sum(len(d) for d in dtrajs), its, correlation, ck,
                      float(np.dot(pi, fold_by_state)), float(np.std(samples)), float(np.std(boot_fractions, ddof=1)),
                      {tau: tuple(float(x) * dt_ns for x in np.percentile(v, [2.5, 97.5])) for tau, v in boot_its.items()},
                      long_its, weights)


def timescales_converged(its_ns: dict[int, list[float]], tolerance: float = 0.1) -> bool:
    """Implied-timescale check: the slowest timescale changes by less than ``tolerance`` between the two longest lags."""
    lags = sorted(its_ns)
    a, b = its_ns[lags[-2]][0], its_ns[lags[-1]][0]
    return abs(b - a) <= tolerance * b


@dataclass
class MeltingCurve:
    """Folded fraction against temperature from one temperature's data (see :func:`melting_curve`)."""

    temperature: float  # K, where the data were sampled
    temperatures: np.ndarray  # K
    folded_fraction: np.ndarray
    folded_fraction_err: np.ndarray  # one standard error (MSM error at T0 and block jackknife of the reweighting)
    ess_folded: np.ndarray  # effective sample size of each state's reweighted frames (Kish size / g)
    ess_unfolded: np.ndarray
    reliable: np.ndarray  # both effective sample sizes ≥ ``min_ess``
    delta_u: float  # ⟨U⟩_folded − ⟨U⟩_unfolded at the sampled temperature, kcal/mol
    delta_u_err: float
    frames_folded: int
    frames_unfolded: int
    inefficiency: float  # statistical inefficiency g of the energies (frames per independent sample)

    def midpoint(self) -> float | None:
        """Temperature (K) where the folded fraction crosses ½ between two reliable points (linear), or None."""
        t, p = self.temperatures[self.reliable], self.folded_fraction[self.reliable]
        for i in np.flatnonzero(np.diff(np.sign(p - 0.5)) != 0):
            return float(t[i] + (0.5 - p[i]) * (t[i + 1] - t[i]) / (p[i + 1] - p[i]))
        return None

    def summary(self) -> dict:
        mid = self.midpoint()
        return {"sampled_at_K": self.temperature,
                "delta_u_folded_minus_unfolded_kcal": round(self.delta_u, 2), "delta_u_err_kcal": round(self.delta_u_err, 2),
                "frames_with_energies": {"folded": self.frames_folded, "unfolded": self.frames_unfolded},
                "energy_statistical_inefficiency_frames": round(self.inefficiency, 2),
                "midpoint_K": None if mid is None else round(mid, 1),
                "curve": [{"T_K": float(t), "folded_fraction": round(float(p), 4), "err": round(float(e), 4),
                           "ess_folded": round(float(ef), 1), "ess_unfolded": round(float(eu), 1), "reliable": bool(r)}
                          for t, p, e, ef, eu, r in zip(self.temperatures, self.folded_fraction, self.folded_fraction_err,
                                                        self.ess_folded, self.ess_unfolded, self.reliable)]}


def statistical_inefficiency(series: list[np.ndarray]) -> float:
    r"""g = 1 + 2 Σ_t (1 − t/N) C(t) of the pooled series (C: normalised autocorrelation at lag t, averaged
    over the series with weights N − t, summed up to the first lag where it drops to zero or below).
    N correlated frames carry about N/g independent samples."""
    xs = [np.asarray(x, dtype=np.float64) - np.concatenate(series).mean() for x in series]
    var = np.mean(np.concatenate(xs) ** 2)
    if var == 0.0:
        return 1.0
    n_max = max(len(x) for x in xs)
    g = 1.0
    for t in range(1, n_max - 1):
        pairs = [(x[:-t] * x[t:]).sum() for x in xs if len(x) > t]
        n_pairs = sum(len(x) - t for x in xs if len(x) > t)
        c = sum(pairs) / n_pairs / var
        if c <= 0.0:
            break
        g += 2.0 * c * n_pairs / sum(len(x) for x in xs)
    return g


def melting_curve(energies: list[np.ndarray], folded: list[np.ndarray], temperature: float, folded_fraction: float,
                  folded_fraction_err: float, temperatures, n_blocks: int = 10, min_ess: float = 20.0) -> MeltingCurve:
    r"""The folded fraction p_f(T) near the sampled temperature T₀, by reweighting each state's frames.

    The potential does not depend on T (implicit solvent with fixed parameters), so the population of a
    state s at T follows from its frames at T₀ exactly,

    .. math:: \frac{Z_s(T)}{Z_s(T_0)} = \bigl\langle e^{-(β - β_0) U} \bigr\rangle_{s, T_0}, \qquad
              K(T) = \frac{p_f(T)}{1 - p_f(T)} = K(T_0)\,
              \frac{\langle e^{-(β - β_0) U}\rangle_{f}}{\langle e^{-(β - β_0) U}\rangle_{u}},

    with β = 1/(k_B T) and U in kcal/mol. Only averages *within* each state enter: they need frames in
    equilibrium within the folded and the unfolded state, not the right balance between them, which comes
    from K(T₀) (the MSM's folded fraction, ``folded_fraction`` ± ``folded_fraction_err``). ``energies``
    and ``folded`` hold, per trajectory with saved energies, the frames' energies and folded flags (time
    order). The error adds in ln K the MSM's error and a jackknife over ``n_blocks`` contiguous blocks
    of the pooled frames. Far from T₀ the weights concentrate on a few frames: a temperature counts as
    reliable only while each state keeps an effective sample size ≥ ``min_ess``: the Kish size
    (Σw)²/Σw² divided by the :func:`statistical_inefficiency` g of the energies' fluctuations about
    their state's mean (successive frames are correlated; subtracting the state means keeps the slow
    folding switches, which the within-state averages do not see, out of g; ``MeltingCurve.inefficiency``).
    With n independent samples a state's reweighting factor has a relative error of about 1/√n: the
    default 20 keeps it near 20 %, ±0.2 in ln K.
    """
    u = np.concatenate([np.asarray(e, dtype=np.float64) for e in energies])
    f = np.concatenate([np.asarray(x, dtype=bool) for x in folded])
    if len(u) != len(f) or not np.isfinite(u).all():
        raise ValueError("energies and folded flags must match frame by frame and be finite")
    if not (f.any() and (~f).any()):
        raise ValueError("need frames of both the folded and the unfolded state to reweight")
    if not 0.0 < folded_fraction < 1.0:
        raise ValueError(f"folded_fraction must lie in (0, 1), got {folded_fraction}")
    temps = np.asarray(temperatures, dtype=np.float64)
    dbeta = 1.0 / (KB_KCAL_PER_MOL_K * temps) - 1.0 / (KB_KCAL_PER_MOL_K * temperature)  # (T,)
    logw = -dbeta[:, None] * (u - u.mean())[None, :]  # (T, frames)

    def log_mean(mask):  # ln ⟨e^{−Δβ U}⟩ over the frames in mask, for every T (log-sum-exp)
        lw = logw[:, mask]
        top = lw.max(1, keepdims=True)
        return top[:, 0] + np.log(np.exp(lw - top).mean(1))

    def log_ratio(keep):
        return log_mean(keep & f) - log_mean(keep & ~f)

    fluctuation = u - np.where(f, u[f].mean(), u[~f].mean())
    g = statistical_inefficiency(np.split(fluctuation, np.cumsum([len(e) for e in energies])[:-1]))

    def ess(mask):
        w = np.exp(logw[:, mask] - logw[:, mask].max(1, keepdims=True))
        return w.sum(1) ** 2 / (w**2).sum(1) / g

    blocks = np.array_split(np.arange(len(u)), n_blocks)
    jack, du_jack = [], []
    for b in blocks:
        keep = np.ones(len(u), bool)
        keep[b] = False
        if (keep & f).any() and (keep & ~f).any():
            jack.append(log_ratio(keep))
            du_jack.append(u[keep & f].mean() - u[keep & ~f].mean())
    m = len(jack)
    var_ratio = (m - 1) / m * ((np.array(jack) - np.mean(jack, axis=0)) ** 2).sum(0) if m > 1 else np.full(len(temps), np.inf)
    du_err = float(np.sqrt((m - 1) / m * ((np.array(du_jack) - np.mean(du_jack)) ** 2).sum())) if m > 1 else float("inf")
    ln_k0 = np.log(folded_fraction / (1.0 - folded_fraction))
    var_ln_k0 = (folded_fraction_err / (folded_fraction * (1.0 - folded_fraction))) ** 2
    ln_k = ln_k0 + log_ratio(np.ones(len(u), bool))
    p = 1.0 / (1.0 + np.exp(-ln_k))
    err = p * (1.0 - p) * np.sqrt(var_ln_k0 + var_ratio)
    ess_f, ess_u = ess(f), ess(~f)
    return MeltingCurve(temperature, temps, p, err, ess_f, ess_u, (ess_f >= min_ess) & (ess_u >= min_ess),
                        float(u[f].mean() - u[~f].mean()), du_err, int(f.sum()), int((~f).sum()), g)


def analyse_folding(run_dirs: list, folded_below: float = 1.0, unfolded_above: float = 3.0, n_blocks: int = 5,
                    lag: int = 150, check_pdb: str | None = None, trajectories: list[Trajectory] | None = None,
                    melting_temperatures=tuple(range(300, 381, 5))) -> tuple[dict, np.ndarray, FoldingMSM]:
    """Folding report of the runs, the folded reference (Å) and the MSM (its ``weights`` per trajectory).

    Where runs saved potential energies, the report also holds the :func:`melting_curve` at
    ``melting_temperatures`` (K), anchored on the MSM's folded fraction.

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
    with_energy = [i for i, t in enumerate(trajs) if t.energies is not None]
    if with_energy:
        curve = melting_curve([trajs[i].energies for i in with_energy], [folded[i] for i in with_energy],
                              trajs[0].temperature, msm.folded_fraction,
                              max(msm.folded_fraction_std, msm.folded_fraction_bootstrap_std), melting_temperatures)
        report["melting"] = {"trajectories": [trajs[i].source for i in with_energy], **curve.summary()}
    if check_pdb:
        report["reference"]["rmsd_to_check_structure_A"] = round(float(rmsd(ref[None], read_ca_pdb(check_pdb))[0]), 3)
        report["reference"]["check_structure"] = str(check_pdb)
    return report, ref, msm


def write_folding_results(run_dirs: list, residue_names: list[str], data_dir=None) -> dict:
    """``data/cln025.npz`` with MSM weights, the folded reference ``cln025_folded_ca.pdb`` and the report
    ``cln025_folding.json``, all registered with their sha256 in ``data/registry.json``."""
    import time

    from ..storage import atomic_write_json, register, sha256
    from .dataset import DATA_DIR, build_command, build_dataset

    data_dir = DATA_DIR if data_dir is None else data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    trajs = thin_to_common_interval(load_trajectories(run_dirs))
    report, ref, msm = analyse_folding(run_dirs, trajectories=trajs)
    pdb, report_path = data_dir / "cln025_folded_ca.pdb", data_dir / "cln025_folding.json"
    write_ca_pdb(pdb, ref, residue_names)
    atomic_write_json(report_path, report)
    summary = {k: report[k] for k in ("total_ns", "trajectories", "foldings", "unfoldings", "folded_fraction_raw")}
    entry = build_dataset("cln025", run_dirs, residue_names, data_dir, weights=np.concatenate(msm.weights), trajectories=trajs,
                          provenance={"weights": "MSM stationary distribution per frame (see cln025_folding.json)",
                                      **summary, "msm_folded_fraction": report["msm"]["folded_fraction"],
                                      "msm_folded_fraction_std": report["msm"]["folded_fraction_std"],
                                      "msm_folded_fraction_bootstrap_std": report["msm"]["folded_fraction_bootstrap_std"],
                                      "msm_implied_timescales_converged": report["msm"]["implied_timescales_converged"]})
    entries = {key: {"file": path.name, "sha256": sha256(path), "command": build_command("cln025"),
                     "created": time.strftime("%Y-%m-%d")}
               for key, path in (("cln025-folded-reference", pdb), ("cln025-folding-report", report_path))}
    register(data_dir / "registry.json", entries)
    return entry
