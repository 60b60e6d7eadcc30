"""The study every molecular chapter runs, for any system: label sources × noise stds → flows → labels →
one CG model per source → simulation → scores.

A :class:`Study` is a configuration: a registered dataset and its :class:`~opforce_tutorial.systems.CGSystem`
(observables, states), the label sources and noise stds to run, a recipe per flow kind, the label
budget, and the CG recipe (priors, network, force matching, simulation). Its methods are the pipeline's
stages, and :meth:`Study.recipes` publishes every model it makes to the catalog
(:mod:`opforce_tutorial.catalog`) under names that say what they are::

    <study>-coupling-<σ>, <study>-cnf-<σ>           flows (the reverse kernels' conditional densities)
    <study>-cg-reference, <study>-cg-<source>-<σ>   CG models, one per label source
    <study>-prior-only                              the prior alone, simulated: every CG model's baseline

Label sources: ``reference`` (the dataset's mapped forces; as many frames as a kernel makes labels, unless the
study sets :attr:`Study.reference_labels`),
``noise`` (:class:`~opforce_tutorial.kernels.NoiseKernel`, mean-free), ``coupling`` and ``cnf``
(:class:`~opforce_tutorial.kernels.ReverseNoiseKernel` around a coupling flow or a CNF density). Every
source gets the same label budget and the same CG recipe; every random choice is seeded (seed 0 is the
registered model, other seeds its replicates). The frames are the dataset's equilibrium sample: its
per-frame weights (MSM or basin weights), if any, become repeated frames
(:meth:`~opforce_tutorial.data.dataset.CGDataset.equilibrium_frames`), for labels, priors and flows alike.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .catalog import ModelSpec
from .cg import ForceMatchingSettings, NetworkEnsemble, PriorEnergy, PriorFit, SchNetConfig, SchNetEnergy, fit_priors
from .cg.network import CGModel
from .cg.pipeline import CGRunSettings, run_label_source, simulate_cg
from .cg.training import validation_mask
from .data.dataset import CGDataset, load_dataset, registry_entry, verified_path
from .evaluation import ReferenceHistograms, evaluate, state_populations
from .kernels import NoiseKernel, ReverseNoiseKernel
from .kernels.cnf import SMALL_EGNN, CNFDensity, CNFTraining, EGNNConfig, EGNNVectorField, memory_budget_gb, train_cnf
from .kernels.coupling import SMALL_COUPLING, CouplingFlow, CouplingFlowConfig, CouplingTraining, train_coupling_flow
from .labels import LabelSettings, ShareLabelled, label_frames, seeded_subset
from .observables import chain_observables, make_reference, observable
from .storage import array_sha256, state_sha256
from .systems.base import CGSystem
from .units import kbt as thermal_energy

SOURCES = ("reference", "noise", "coupling", "cnf")
FLOW_SOURCES = ("coupling", "cnf")


@dataclass
class FlowRecipe:
    """How a flow kind is built and trained: its config (all fields but ``bead_types``) and budget;
    ``n_steps_at`` gives other step counts at some noise stds (Å → steps)."""

    config: dict
    n_steps: int
    batch_size: int = 256
    n_steps_at: dict[float, int] = field(default_factory=dict)

    def steps(self, noise_std: float) -> int:
        return self.n_steps_at.get(noise_std, self.n_steps)


#: CPU-sized recipes (measured in chapter 2; ``benchmarks/ala2_ablation.py``): flows of minutes on one core,
#: 40 000 labels per source (4 000 frames × 10 draws, the paper's protocol), a SchNet-style CG model with 3000
#: force-matching steps and early stopping, 64 replicas × 100 ps at 2 fs. Chapter 2 trains its CG models 4 × as
#: long and gives the reference every frame (``chapters.ala2.CG_SETTINGS``, ``REFERENCE_LABELS``).
#: At σ = 0.1 Å the coupling flow trains 4 × as long: in chapter 2, with 4 000 steps its outputs' angles stayed
#: at 0.47 × the noise kernel's JS, with 16 000 at 0.28 × (README, ablation table); at 0.05 Å 4 000 steps pass.
CPU_FLOWS = {"coupling": FlowRecipe(dict(SMALL_COUPLING, coordinates="bonds", invariant_features=True), 4000,
                                    n_steps_at={0.1: 16_000}),
             "cnf": FlowRecipe(dict(SMALL_EGNN), 8000)}
CPU_LABELS = LabelSettings(n_frames=4_000, repeats=10, batch_size=256, seed=0)
#: Kernel outputs scored by :meth:`Study.kernel_output_js` (the output gate): 4 000 frames, one draw each.
OUTPUT_LABELS = LabelSettings(n_frames=4_000, repeats=1, batch_size=256, seed=0)
CPU_CG = CGRunSettings(hidden=64, n_interactions=2, n_rbf=32, cutoff=10.0,
                       force_matching=ForceMatchingSettings(n_steps=3000, batch_size=256, lr=1e-3, eval_every=100,
                                                            patience=8),
                       n_replicas=64, n_steps=50_000, dt=0.002, friction=1.0, save_every=250, burn_in=2000)
#: A try-out budget (``opforce study --quick``): every stage runs, in a few minutes, far from converged.
QUICK = dict(flows={"coupling": FlowRecipe(dict(SMALL_COUPLING, coordinates="bonds", invariant_features=True), 300),
                    "cnf": FlowRecipe(dict(SMALL_EGNN), 300)},
             labels=LabelSettings(n_frames=500, repeats=2, batch_size=256, seed=0),
             output_labels=LabelSettings(n_frames=500, repeats=1, batch_size=256, seed=0),
             cg=CGRunSettings(hidden=32, n_rbf=16, cutoff=10.0,
                              force_matching=ForceMatchingSettings(n_steps=200, batch_size=128, eval_every=50),
                              n_replicas=16, n_steps=5000, save_every=100, burn_in=500))


@dataclass
class CGVariant:
    """One CG model of a study: its label source (and σ), and for an extra model (:attr:`Study.variants`) a
    different network (e.g. one that sees signed dihedrals), another force-matching budget
    (``force_matching``, default: the study's), another label budget (``labels``, default: the source's,
    :meth:`Study.label_settings`) or an ensemble of ``ensemble`` networks fitted to the same labels
    (:class:`~opforce_tutorial.cg.network.NetworkEnsemble`). ``required=False`` marks a measurement the book does not load: its missing
    weights are a "to build" line of ``opforce models``, not a problem. ``label`` is what the pages add to the
    source's name (:meth:`Study.display_name`): "+ dihedrals" shows as "reference forces, + dihedrals"."""

    name: str
    source: str
    noise_std: float | None = None
    dihedral_hidden: int = 0
    force_matching: ForceMatchingSettings | None = None
    required: bool = True
    labels: LabelSettings | None = None
    ensemble: int = 1
    label: str = ""


@dataclass
class Study:
    """One system's study (see the module docstring). Attributes are read when a stage runs, so a
    changed recipe (a test's tiny budget) applies to every later call, the published recipes included."""

    name: str
    dataset: str | CGDataset  # a registered dataset's name, or one in memory (a user's own frames)
    system: CGSystem
    bead_types: list[int]
    noise_stds: tuple[float, ...]
    flows: dict[str, FlowRecipe]
    labels: LabelSettings
    output_labels: LabelSettings
    cg: CGRunSettings
    sources: tuple[str, ...] = SOURCES
    variants: tuple[CGVariant, ...] = ()
    #: trajectory (time, replicas, beads, 3) -> extra results of a long run (e.g. basin exchange counts)
    long_run_analysis: Callable[[np.ndarray], dict] | None = None
    #: whether the study's models must ship in models/ (False while its chapter is being built)
    pretrained_required: bool = True
    #: the reference source's frames (data_fraction, n_frames; repeats multiply the count, since a frame has one
    #: force); None: as many frames as a kernel makes labels under :attr:`labels`
    reference_labels: LabelSettings | None = None

    # ------------------------------------------------------------------------------------------- names
    def kernel_name(self, source: str, noise_std: float) -> str:
        return f"{self.name}-{source}-{noise_std:g}"

    def cg_name(self, source: str, noise_std: float | None = None) -> str:
        return f"{self.name}-cg-reference" if source == "reference" else f"{self.name}-cg-{source}-{noise_std:g}"

    def cg_model_names(self) -> list[str]:
        """The study's main CG models, one per label source: the reference, then each kernel source at each σ
        (the :attr:`variants` are extra)."""
        variants = {v.name for v in self.variants}
        return [name for name in self.cg_models() if name not in variants]

    def training_chains(self) -> list[list[str]]:
        """Every model of the study as independent chains of ``opforce pretrain`` names: a flow and the CG
        model of its labels in one chain (the CG model's labels must come from the flow the chain saved),
        the flows first (slowest: the CNF chains); every other CG model alone; the prior-only run last."""
        chains = [[self.kernel_name(s, g), self.cg_name(s, g)] for g in self.noise_stds for s in ("cnf", "coupling")
                  if s in self.sources and s in self.flows]
        chains += [[self.cg_name(s, g)] for g in self.noise_stds for s in self.sources
                   if s not in FLOW_SOURCES and s != "reference"]
        chains += [[self.cg_name("reference")]] if "reference" in self.sources else []
        return chains + [[v.name] for v in self.variants] + [[self.prior_only_name]]

    def label_settings(self, source: str) -> LabelSettings:
        """The label budget of a source: :attr:`reference_labels` for the reference (if set), else :attr:`labels`."""
        return self.reference_labels if source == "reference" and self.reference_labels is not None else self.labels

    # -------------------------------------------------------------------------------------------- data
    def training_frames(self):
        """The dataset (verified, if registered) as an unweighted equilibrium sample: the frames every label
        source, flow and CG model uses."""
        ds = load_dataset(self.dataset) if isinstance(self.dataset, str) else self.dataset
        return ds.equilibrium_frames()

    def reference_histograms(self) -> ReferenceHistograms:
        """The reference histograms of every observable of the system: a registered dataset's saved ones
        (verified like a dataset), else made from the dataset in memory (with its weights)."""
        if isinstance(self.dataset, str):
            return ReferenceHistograms.load(verified_path(f"{self.dataset}-histograms"))
        return make_reference(self.dataset.positions, self.system.observables, self.dataset.weights)

    def dataset_sha256(self) -> str:
        if isinstance(self.dataset, str):
            return registry_entry(self.dataset)["sha256"]
        return array_sha256(self.dataset.positions)

    def score(self, trajectory, reference: ReferenceHistograms | None = None) -> dict:
        """JS divergences (with floors) of every observable, and the populations of the system's states."""
        reference = self.reference_histograms() if reference is None else reference
        owned = {observable(o).name: o for o in self.system.observables}
        out = {"js": evaluate(trajectory, reference, [owned[n] for n in reference.probabilities])}
        if self.system.states is not None:
            out["populations"] = state_populations(trajectory, self.system.states)
        return out

    # ----------------------------------------------------------------------------------------- kernels
    def make_kernel(self, source: str, noise_std: float, kbt: float, flow: torch.nn.Module | None = None,
                    device="cpu"):
        """The kernel of a label source; ``flow`` is the trained coupling flow or CNF vector field.

        CNF scores are solved in chunks planned from the device's memory budget
        (:func:`~opforce_tutorial.kernels.cnf.memory_budget_gb`).
        """
        if source == "noise":
            return NoiseKernel(noise_std, kbt, mean_free=True)
        if source == "coupling":
            return ReverseNoiseKernel(flow, noise_std, kbt, mean_free=True)
        if source == "cnf":
            density = CNFDensity(flow, noise_std, memory_budget_gb=memory_budget_gb(device))
            return ReverseNoiseKernel(density, noise_std, kbt, mean_free=True)
        raise ValueError(f"no kernel for label source {source!r}; kernels are noise, coupling and cnf")

    def kernel_outputs(self, source: str, noise_std: float, dataset, flow=None, n_frames: int = 10_000, seed: int = 0,
                       device="cpu", chunk: int = 1000) -> np.ndarray:
        """Positions y (Å) of a kernel, without their labels, from ``n_frames`` frames of ``dataset`` drawn at
        random (at most all), one draw each, seeded by ``seed``: what the kernel's labels sit at, for
        observables the output gate does not cover (a flow's output on the global free energy)."""
        if source not in ("noise", *FLOW_SOURCES):
            raise ValueError(f"kernel outputs need a kernel (noise, coupling or cnf), got {source!r}")
        if not n_frames >= 1:
            raise ValueError(f"n_frames must be at least 1, got {n_frames}")
        idx = seeded_subset(dataset.n_frames, n_frames, seed)
        kernel = self.make_kernel(source, noise_std, thermal_energy(dataset.temperature), flow, device)
        generator = torch.Generator(device=device).manual_seed(seed)
        x = torch.as_tensor(dataset.positions[idx], dtype=torch.float32, device=device)
        return torch.cat([kernel.sample(part, generator).cpu() for part in torch.split(x, chunk)]).numpy()

    def labelled_set(self, source: str, noise_std: float | None, dataset, flow=None,
                     settings: LabelSettings | None = None, device="cpu", progress: bool = True,
                     work_dir: Path | None = None):
        """(positions, labels, source frame index) of a label source over ``dataset``.

        Kernel labels are written to ``work_dir/labels.npz`` (resumable) when given, else to a temporary folder.
        On a non-zero torchrun rank it raises :class:`~opforce_tutorial.labels.ShareLabelled` once its share is written.
        """
        settings = self.label_settings(source) if settings is None else settings
        if source == "reference":  # frames × repeats of them (at most all), chosen by the same seeded rule
            idx = seeded_subset(dataset.n_frames, settings.frames_to_keep(dataset.n_frames) * settings.repeats,
                                settings.seed)
            return dataset.positions[idx], dataset.forces[idx], idx
        kernel = self.make_kernel(source, noise_std, thermal_energy(dataset.temperature), flow, device)
        weights = None if flow is None else state_sha256(flow)  # a resume after retraining the flow is refused
        with tempfile.TemporaryDirectory() as tmp:
            out = label_frames(dataset.positions, kernel, dataset.temperature, Path(work_dir or tmp) / "labels.npz",
                               settings, device, model_sha256=weights, source=self.system.name, progress=progress)
        if out is None:  # another rank merges the labels and goes on
            raise ShareLabelled(f"this rank's share of the {source} labels is written; rank 0 goes on")
        return out.positions, out.forces, out.frame_index

    def flow_recipe(self, source: str, noise_std: float, seed: int = 0):
        """The network config and training settings of a label source's flow at ``noise_std`` with ``seed``
        (the registered flow's, with seed 0): ``(CouplingFlowConfig, CouplingTraining)`` or
        ``(EGNNConfig, CNFTraining)``."""
        recipe = self.flows[source]
        if source == "coupling":
            return (CouplingFlowConfig(bead_types=self.bead_types, **recipe.config),
                    CouplingTraining(noise_std=noise_std, n_steps=recipe.steps(noise_std), batch_size=recipe.batch_size,
                                     seed=seed))
        return (EGNNConfig(bead_types=self.bead_types, **recipe.config),
                CNFTraining(noise_std=noise_std, prior_std=noise_std, n_steps=recipe.steps(noise_std),
                            batch_size=recipe.batch_size, seed=seed))

    def fit_flow(self, ds, source: str, noise_std: float, seed: int, device, work_dir: Path | None = None):
        """The coupling flow or CNF vector field of a label source, trained on the frames of ``ds`` with
        ``seed`` (0: the registered one); checkpointed in ``work_dir``. Returns ``(flow, config, settings, metrics)``."""
        checkpoint = None if work_dir is None else str(Path(work_dir) / "flow.ckpt")
        config, settings = self.flow_recipe(source, noise_std, seed)
        train = train_coupling_flow if source == "coupling" else train_cnf
        flow, history = train(ds.positions, config, settings, device, checkpoint)
        metrics = {"final_val_loss": history["val_loss"][-1], "val_loss": history["val_loss"],
                   "dataset_sha256": self.dataset_sha256()}
        return flow, config, settings, metrics

    def kernel_output_js(self, source: str, noise_std: float, flow, ds=None, device="cpu", progress: bool = False,
                         work_dir: Path | None = None) -> dict:
        """JS (with floors) of the bonds and angles of a kernel's labelled positions y against the data
        (the output gate): ``{observable: {"js", "js_floor", "n_samples"}}`` for :attr:`output_labels`.
        With ``work_dir`` its labels are kept in ``work_dir/output_gate/`` (a killed run resumes)."""
        ds = self.training_frames() if ds is None else ds
        y, _, _ = self.labelled_set(source, noise_std, ds, flow, self.output_labels, device=device, progress=progress,
                                    work_dir=None if work_dir is None else Path(work_dir) / "output_gate")
        names = [n for n in chain_observables(self.system.n_beads) if n.split()[0] in ("bond", "angle")]
        return evaluate(y, self.reference_histograms(), names)

    # --------------------------------------------------------------------------------------- CG models
    def cg_run(self, ds, source: str, noise_std: float | None, flow, seed: int, device, dihedral_hidden: int = 0,
               label_settings: LabelSettings | None = None, cg_settings: CGRunSettings | None = None,
               work_dir: Path | None = None, n_members: int = 1):
        """Labels → CG model (``n_members`` networks, :func:`~opforce_tutorial.cg.pipeline.fit_cg_model`) →
        simulation → scores for one label source on the frames of ``ds``, every random choice seeded by ``seed``.

        ``seed`` picks the labelled frames and kernel draws, the network's initialisation and batches, and
        the simulation's starts and noise; seed 0 is the registered model. The registered models use
        :meth:`label_settings` and :attr:`cg`; other settings are for ablations. Labels and the force-matching
        checkpoint go to ``work_dir`` (if given), so a killed run resumes. Returns ``(CGRun, metrics, settings)``.
        """
        labels, cg = self.run_settings(source, seed, dihedral_hidden, label_settings, cg_settings)
        y, f, idx = self.labelled_set(source, noise_std, ds, flow, labels, device=device, work_dir=work_dir)
        run = run_label_source(y, f, thermal_energy(ds.temperature), self.bead_types, ds.bead_masses, ds.positions, cg,
                               val_mask=validation_mask(idx, ds.n_frames, 0.1, ds.traj_ids), device=device,
                               checkpoint=None if work_dir is None else str(Path(work_dir) / "cg.ckpt"),
                               n_members=n_members)
        scores = self.score(run.trajectory)
        metrics = {"n_labels": len(y), "best_val_force_mse": min(run.history["val_loss"]),
                   "best_step": run.history["best_step"], "stopped_step": run.history["step"][-1],
                   "js": scores["js"], **(
                       {"populations": scores["populations"]} if "populations" in scores else {}),
                   "dataset_sha256": self.dataset_sha256()}
        return run, metrics, _training_record(labels, cg, n_members)

    def run_settings(self, source: str, seed: int, dihedral_hidden: int = 0, label_settings: LabelSettings | None = None,
                     cg_settings: CGRunSettings | None = None) -> tuple[LabelSettings, CGRunSettings]:
        """The label and CG settings :meth:`cg_run` trains with (defaults :meth:`label_settings` and :attr:`cg`),
        every random choice seeded by ``seed``; seed 0's are what a registered model records."""
        label_settings = self.label_settings(source) if label_settings is None else label_settings
        cg_settings = self.cg if cg_settings is None else cg_settings
        return (replace(label_settings, seed=seed),
                replace(cg_settings, seed=seed, force_matching=replace(cg_settings.force_matching, seed=seed),
                        dihedral_hidden=dihedral_hidden))

    @property
    def prior_only_name(self) -> str:
        return f"{self.name}-prior-only"

    def prior_only_trajectory(self, ds=None, prior=None, progress: bool = False, device="cpu") -> np.ndarray:
        """The baseline of every CG model: its prior alone (fitted to the training frames, no network),
        simulated with the study's simulation settings (seed 0). What a trained model adds to the global
        free energy is measured against this. The recipe :attr:`prior_only_name` saves it with the prior."""
        ds = self.training_frames() if ds is None else ds
        kbt = thermal_energy(ds.temperature)
        prior = self.fit_prior(ds)[0] if prior is None else prior
        return simulate_cg(prior, ds.positions, kbt, ds.bead_masses, self.cg, device, progress=progress)

    def fit_prior(self, ds=None) -> tuple[PriorEnergy, list[PriorFit]]:
        """The prior every CG model of the study starts from, fitted to the training frames (``ds``, default
        :meth:`training_frames`) with the study's repulsion; returns the prior and one fit per term (for plots)."""
        ds = self.training_frames() if ds is None else ds
        return fit_priors(ds.positions, thermal_energy(ds.temperature),
                          repulsion_min_separation=self.cg.repulsion_min_separation)

    def saved_prior_only_trajectory(self, prior: PriorEnergy | None = None) -> np.ndarray:
        """:meth:`prior_only_trajectory` as registered (``opforce pretrain <study>-prior-only``; trained afresh where
        :func:`~opforce_tutorial.pretrained.should_train` says so), after checking that it is the run of
        ``prior`` (default: :meth:`fit_prior`). A run recorded with other simulation settings than
        :meth:`prior_only_settings` is refused when it loads."""
        from .pretrained import PretrainedError, load, load_or_train, rebuild_command, samples, should_train

        name = self.prior_only_name
        saved = load_or_train(name) if should_train() else load(name)[0]
        prior = self.fit_prior()[0] if prior is None else prior
        mine, theirs = prior.state_dict(), saved.state_dict()
        if mine.keys() != theirs.keys() or any(
                mine[k].shape != v.shape or not torch.allclose(v.double(), mine[k].cpu().double(), rtol=1e-6, atol=1e-9)
                for k, v in theirs.items()):
            raise PretrainedError(f"{name} holds another prior than the one fitted here; rebuild it with "
                                  f"`{rebuild_command(name)}`")
        return samples(name)

    def prior_only_settings(self) -> dict:
        """What the saved prior-only run records as its registry ``training``: the study's simulation settings
        (the prior itself, its pairs included, is saved with the run and compared when it loads)."""
        keys = ("n_replicas", "n_steps", "dt", "friction", "save_every", "burn_in", "seed")
        return {"simulation": {k: getattr(self.cg, k) for k in keys}}

    def long_run(self, model: torch.nn.Module, ns: float = 1.0, device="cpu", progress: bool = True,
                 checkpoint: str | None = None) -> dict:
        """A CG model simulated as its registration did (:attr:`cg`, seed 0: the same starting frames) but for
        ``ns`` nanoseconds per replica: the populations of the system's states (block errors over the
        replicas) and :attr:`long_run_analysis` of the trajectory. With ``checkpoint`` a killed run resumes."""
        if not ns > 0:
            raise ValueError(f"ns must be positive, got {ns}")
        ds = self.training_frames()
        settings = replace(self.cg, n_steps=int(round(ns * 1000 / self.cg.dt)))
        traj = simulate_cg(model, ds.positions, thermal_energy(ds.temperature), ds.bead_masses, settings, device,
                           progress, checkpoint)
        out = dict(self.long_run_analysis(traj)) if self.long_run_analysis else {}
        if self.system.states is not None:
            out["populations"] = state_populations(traj, self.system.states)
        return out

    def models_trained_on_other_data(self, models_registry: dict | None = None) -> list[str]:
        """The study's registered models whose recorded training data is not the shipped dataset (after
        the dataset is rebuilt, these are the models ``opforce pretrain`` should retrain)."""
        from .pretrained import read_registry

        registry = read_registry() if models_registry is None else models_registry
        current = self.dataset_sha256()
        return sorted(name for name, entry in registry.items()
                      if name.startswith(f"{self.name}-") and entry.get("metrics", {}).get("dataset_sha256") != current)

    def models_with_other_settings(self, models_registry: dict | None = None) -> list[str]:
        """The study's registered models whose recorded training settings are not what their recipe records
        now (:func:`~opforce_tutorial.pretrained.settings_changes`: label count, force-matching budget, prior,
        network, simulation): the models ``opforce pretrain`` should retrain; loading them is refused."""
        from .pretrained import models_with_other_settings, read_registry

        registry = read_registry() if models_registry is None else models_registry
        return models_with_other_settings({name: e for name, e in registry.items() if name in self.recipes()})

    # ---------------------------------------------------------------------------------------- catalog
    def recipes(self) -> dict[str, ModelSpec]:
        """Every flow and CG model of the study, for the catalog (:mod:`opforce_tutorial.catalog`)."""
        specs = {}
        for sigma in self.noise_stds:
            for source in FLOW_SOURCES:
                if source in self.sources:
                    specs[self.kernel_name(source, sigma)] = ModelSpec(
                        train=self._train_flow(source, sigma), file=f"{self.name}_{source}_{sigma:g}.pt",
                        build=_build_flow[source], required=self.pretrained_required,
                        settings=lambda source=source, sigma=sigma: asdict(self.flow_recipe(source, sigma)[1]))
        specs[self.prior_only_name] = self._prior_only_spec()
        return specs | {name: self._cg_spec(model) for name, model in self.cg_models().items()}

    def cg_models(self) -> dict[str, CGVariant]:
        """Every CG model of the study by name: the main ones (:meth:`cg_model_names`, with the study's network
        and budget) and the :attr:`variants`."""
        main = [CGVariant(self.cg_name("reference"), "reference")] if "reference" in self.sources else []
        main += [CGVariant(self.cg_name(s, sigma), s, sigma) for sigma in self.noise_stds for s in self.sources
                 if s != "reference"]
        return {m.name: m for m in (*main, *self.variants)}

    def _train_flow(self, source: str, noise_std: float):
        def train(device, work_dir=None):
            ds = self.training_frames()
            flow, config, settings, metrics = self.fit_flow(ds, source, noise_std, 0, device, work_dir)
            metrics["output_js"] = self.kernel_output_js(source, noise_std, flow.eval(), ds, device, progress=True,
                                                         work_dir=work_dir)
            return flow.cpu(), asdict(config), asdict(settings), metrics, None

        return train

    def _prior_only_spec(self) -> ModelSpec:
        def train(device, work_dir=None):
            ds = self.training_frames()
            prior = self.fit_prior(ds)[0]
            traj = self.prior_only_trajectory(ds, prior, progress=True, device=device)
            config = {"n_beads": self.system.n_beads, "n_fourier": prior.n_fourier,
                      "repulsion_min_separation": prior.repulsion_min_separation}
            return prior.cpu(), config, self.prior_only_settings(), {**self.score(traj), "dataset_sha256":
                                                                    self.dataset_sha256()}, traj

        return ModelSpec(train=train, build=build_prior, file=self.prior_only_name.replace("-", "_") + ".pt",
                         required=self.pretrained_required, settings=self.prior_only_settings)

    def _cg_spec(self, variant: CGVariant) -> ModelSpec:
        source, noise_std, dihedral_hidden = variant.source, variant.noise_std, variant.dihedral_hidden

        def settings() -> CGRunSettings:  # read when a stage runs: the catalog keeps this spec for the process
            return self.cg if variant.force_matching is None else replace(self.cg, force_matching=variant.force_matching)

        def train(device, work_dir=None):
            from .pretrained import load_or_train

            flow = (load_or_train(self.kernel_name(source, noise_std), device=device).to(device)
                    if source in FLOW_SOURCES else None)
            run, metrics, training = self.cg_run(self.training_frames(), source, noise_std, flow, 0, device,
                                                 dihedral_hidden, label_settings=variant.labels,
                                                 cg_settings=settings(), work_dir=work_dir, n_members=variant.ensemble)
            config = {"n_beads": self.system.n_beads, "n_fourier": run.model.prior.n_fourier,
                      "repulsion_min_separation": run.model.prior.repulsion_min_separation,
                      "schnet": asdict(run.model.net.config),
                      **({"n_members": variant.ensemble} if variant.ensemble > 1 else {})}
            return run.model.cpu(), config, training, metrics, run.trajectory

        def replicate(seed, device, work_dir=None):
            """Metrics of the whole pipeline of the CG model (its kernel's flow included) rerun with ``seed``."""
            ds, metrics, flow = self.training_frames(), {}, None
            if source in FLOW_SOURCES:
                flow, _, _, flow_metrics = self.fit_flow(ds, source, noise_std, seed, device, work_dir)
                metrics["flow_final_val_loss"] = flow_metrics["final_val_loss"]
            return {**self.cg_run(ds, source, noise_std, flow, seed, device, dihedral_hidden,
                                  label_settings=variant.labels, cg_settings=settings(), work_dir=work_dir,
                                  n_members=variant.ensemble)[1], **metrics}

        def long_run(model, ns, device, checkpoint=None):
            return self.long_run(model, ns, device, checkpoint=checkpoint)

        def recorded() -> dict:
            return _training_record(*self.run_settings(source, 0, dihedral_hidden, variant.labels, settings()),
                                    variant.ensemble)

        return ModelSpec(train=train, build=build_cg_model, file=variant.name.replace("-", "_") + ".pt",
                         replicate=replicate, long_run=long_run, required=variant.required and self.pretrained_required,
                         settings=recorded, label=self.display_name(variant))

    @staticmethod
    def display_name(variant: CGVariant) -> str:
        """A CG model's name for people: "reference forces", "cnf σ=0.05", a variant's with its ``label`` added
        ("reference forces, + dihedrals")."""
        source = "reference forces" if variant.source == "reference" else f"{variant.source} σ={variant.noise_std:g}"
        return f"{source}, {variant.label}" if variant.label else source


def _training_record(labels: LabelSettings, cg: CGRunSettings, n_members: int = 1) -> dict:
    """A CG model's registry ``training`` (an ensemble's also its size, ``n_members``)."""
    return {"labels": asdict(labels), "cg": asdict(cg), **({"n_members": n_members} if n_members > 1 else {})}


def build_cg_model(config: dict) -> CGModel:
    """An untrained CG model (prior + network, or + an ensemble of ``n_members`` networks) of a saved config (one
    saved before the prior's ``repulsion_min_separation`` was recorded has 3)."""
    prior = PriorEnergy(config["n_beads"], config["n_fourier"], config.get("repulsion_min_separation", 3))
    n_members = config.get("n_members", 1)
    nets = [SchNetEnergy(SchNetConfig(**config["schnet"])) for _ in range(n_members)]
    return CGModel(prior, nets[0] if n_members == 1 else NetworkEnsemble(nets))


def build_prior(config: dict) -> PriorEnergy:
    """An unfitted prior of a saved prior-only config."""
    return PriorEnergy(config["n_beads"], config["n_fourier"], config["repulsion_min_separation"])


_build_flow = {"coupling": lambda cfg: CouplingFlow(CouplingFlowConfig(**cfg)),
               "cnf": lambda cfg: EGNNVectorField(EGNNConfig(**cfg))}


def chain_study(dataset: CGDataset, name: str, noise_stds: tuple[float, ...], sources: tuple[str, ...] = SOURCES,
                **recipes) -> Study:
    """A study of a user's own chain: one bead type per bead, its chain observables (bonds, angles,
    dihedrals), the CPU recipes unless ``recipes`` (``flows``, ``labels``, ``output_labels``, ``cg``)
    replace them. A dataset without forces (NaN) cannot have the ``reference`` source."""
    unknown = set(sources) - set(SOURCES)
    if unknown:
        raise ValueError(f"unknown label sources {sorted(unknown)}; choose from {list(SOURCES)}")
    if "reference" in sources and not np.isfinite(dataset.forces).all():
        raise ValueError("the reference source needs forces for every frame; the dataset has none (or NaN)")
    if not noise_stds and set(sources) - {"reference"}:
        raise ValueError("kernel sources need at least one noise std (Å)")
    for sigma in noise_stds:
        if not sigma > 0:
            raise ValueError(f"noise stds must be positive standard deviations in Å, got {sigma!r}")
    n = dataset.positions.shape[1]
    system = CGSystem(name=name, bead_names=tuple(dataset.bead_names), observables=tuple(chain_observables(n)))
    settings = {"flows": dict(CPU_FLOWS), "labels": CPU_LABELS, "output_labels": OUTPUT_LABELS, "cg": CPU_CG, **recipes}
    return Study(name=name, dataset=dataset, system=system, bead_types=list(range(n)), noise_stds=tuple(noise_stds),
                 sources=tuple(sources), **settings)


def run_study(study: Study, out: str | Path, device="cpu", progress: bool = True) -> list[dict]:
    """Every CG model of ``study`` trained, simulated and scored in memory, with a report in ``out``.

    For each label source × σ: the flow (if any) is trained, its output scored, the labels made, the CG
    model fitted and simulated, and every observable scored against the study's data (JS with floors).
    ``out`` receives each model's weights (``models/``), ``results.json`` (one row per model, with the
    settings), ``report.md`` (the table) and ``figures/`` (bond and angle overlays). Each finished model is
    recorded at once and skipped when the command runs again; an unfinished one resumes from
    ``work/<model>/`` (flow and CG checkpoints, labels).
    """
    from . import plotting
    from .storage import atomic_torch_save, atomic_write_json, atomic_write_text, read_json

    out = Path(out)
    (out / "models").mkdir(parents=True, exist_ok=True)
    results_path = out / "results.json"
    results = read_json(results_path) if results_path.exists() else {}
    ds = study.training_frames()
    reference = study.reference_histograms()
    jobs = [("reference", None)] if "reference" in study.sources else []
    jobs += [(s, sigma) for sigma in study.noise_stds for s in study.sources if s != "reference"]
    samples = {}
    for source, sigma in jobs:
        name = study.cg_name(source, sigma)
        if name in results and results[name]["dataset_sha256"] == study.dataset_sha256():
            continue
        work = out / "work" / name
        work.mkdir(parents=True, exist_ok=True)
        row, flow = {"model": name, "source": source, "noise_std_A": sigma}, None
        if source in FLOW_SOURCES:
            flow, _, _, flow_metrics = study.fit_flow(ds, source, sigma, 0, device, work)
            atomic_torch_save(out / "models" / f"{study.kernel_name(source, sigma)}.pt", flow.state_dict())
            row["flow_final_val_loss"] = flow_metrics["final_val_loss"]
            row["output_js"] = study.kernel_output_js(source, sigma, flow.eval(), ds, device)
        run, metrics, settings = study.cg_run(ds, source, sigma, flow, 0, device, work_dir=work)
        atomic_torch_save(out / "models" / f"{name}.pt", run.model.state_dict())
        np.savez_compressed(work / "trajectory.npz", trajectory=run.trajectory)
        results[name] = {**row, **metrics, "settings": settings}
        atomic_write_json(results_path, results)
        samples[name] = run.trajectory
    table = study_table(results)
    atomic_write_text(out / "report.md", f"# Study {study.name}\n\nJS against the study's own data (floor in "
                      f"brackets: the JS of as many independent samples of the data itself).\n\n"
                      f"{_markdown(table)}\n")
    for name in results:
        if name not in samples and (out / "work" / name / "trajectory.npz").exists():
            samples[name] = np.load(out / "work" / name / "trajectory.npz")["trajectory"]
    figures = out / "figures"
    figures.mkdir(exist_ok=True)
    for kind in ("bond", "angle"):
        names = [n for n in reference.probabilities if n.startswith(kind)]
        frames = {m: t.reshape(-1, *t.shape[-2:]) for m, t in samples.items()}
        fig = plotting.plot_observable_overlays(frames, reference, names)
        fig.savefig(figures / f"{kind}s.png")
    return [results[n] for n in results]


def _markdown(table) -> str:
    cols = list(table.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines)


def study_table(results: dict):
    """One row per model of :func:`run_study`'s results: mean bond, angle and dihedral JS (with the mean
    floor), labels and the best validation force error."""
    import pandas as pd

    rows = []
    for name, r in results.items():
        row = {"model": name, "labels": r["n_labels"], "val. force MSE": round(r["best_val_force_mse"], 2)}
        for kind in ("bond", "angle", "dihedral"):
            vals = [v for k, v in r["js"].items() if k.startswith(kind)]
            if vals:
                row[f"JS {kind}s"] = (f"{np.mean([v['js'] for v in vals]):.4f} "
                                      f"({np.mean([v['js_floor'] for v in vals]):.4f})")
        rows.append(row)
    return pd.DataFrame(rows)
