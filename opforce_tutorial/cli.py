"""The ``opforce`` command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .checks import check_count, check_positive
from .systems import CG_SYSTEMS


def main(argv: list[str] | None = None) -> int:
    """``opforce``: a refused input, a mismatched resume or a missing file is one line on stderr and exit
    status 2 (``OPFORCE_DEBUG=1`` shows the traceback); a non-zero torchrun rank whose labels are written exits
    with status 0."""
    from .data.dataset import DatasetError
    from .labels import ShareLabelled
    from .pretrained import PretrainedError

    try:
        return _main(argv)
    except ShareLabelled as done:  # a non-zero torchrun rank whose part is over
        print(f"opforce: {done}", file=sys.stderr)
        return 0
    except (ValueError, FloatingPointError, FileNotFoundError, DatasetError, PretrainedError) as err:
        if os.environ.get("OPFORCE_DEBUG"):
            raise
        print(f"opforce: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    """The ``opforce`` command line (every subcommand and its options)."""
    parser = argparse.ArgumentParser(prog="opforce", description="Operator forces for coarse-grained MD.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pretrain", help="train a registered model and write it to models/ with its registry entry")
    p.add_argument("name", nargs="+", help="registered model name(s), e.g. toy1d-flow")
    p.add_argument("--device", default="cpu", help="torch device to train on (cpu, cuda)")
    rep = sub.add_parser("replicate", help="retrain registered models with other seeds and record their metrics in "
                                           "models/replicates.json (resumable: recorded seeds are skipped)")
    rep.add_argument("name", nargs="+", help="registered model name(s) that have replicates, e.g. ala2-cg-reference")
    rep.add_argument("--seeds", type=int, nargs="+", required=True, help="seeds other than 0 (0 is the registered model)")
    rep.add_argument("--device", default="cpu", help="torch device to train on (cpu, cuda)")
    rep.add_argument("--redo", action="store_true", help="rerun seeds already recorded for the registered model")
    lr = sub.add_parser("long-run", help="simulate registered CG models for longer, as they were registered, and record "
                                         "their state populations (and the study's analyses) in models/long_runs.json "
                                         "(recorded runs are skipped)")
    lr.add_argument("name", nargs="+", help="registered CG model name(s), e.g. ala2-cg-reference")
    lr.add_argument("--ns", type=float, default=1.0, help="length of each replica (ns)")
    lr.add_argument("--device", default="cpu", help="torch device to simulate on (cpu, cuda)")
    lr.add_argument("--redo", action="store_true", help="rerun a length already recorded for the registered weights")
    sub.add_parser("models", help="list registered pretrained models and verify their checksums")
    d = sub.add_parser("data", help="generate reference MD data")
    dsub = d.add_subparsers(dest="data_command", required=True)
    r = dsub.add_parser("md", help="run or extend (resume) MD: replica exchange over several temperatures, "
                                   "plain Langevin MD with one")
    r.add_argument("system", choices=sorted(CG_SYSTEMS))
    r.add_argument("--ns", type=float, required=True, help="target length of the lowest-temperature replica (ns)")
    r.add_argument("--out", required=True, help="run directory (created, or resumed if it exists)")
    # run settings default to None: a flag given on a resume must match the run's run.json
    r.add_argument("--temperatures", type=float, nargs="+", help="kelvin, lowest first (new run; default: ladder of REMDConfig)")
    r.add_argument("--interval-ps", type=float, help="exchange and saving interval of a new run (ps; default 1)")
    r.add_argument("--chunk-frames", type=int, help="frames per chunk = checkpoint interval of a new run (default 500)")
    r.add_argument("--platform", help="OpenMM platform for a new run: CPU (default), OpenCL, CUDA")
    r.add_argument("--threads", type=int, help="CPU threads for a new run (default 1)")
    r.add_argument("--seed", type=int, help="seed for a new run (default 0)")
    c = dsub.add_parser("copies", help="run or extend (resume) many independent copies of a molecule in one "
                                       "System at one temperature (GPU throughput)")
    c.add_argument("system", choices=sorted(CG_SYSTEMS))
    c.add_argument("--ns", type=float, help="target length of every copy (ns); required unless --probe")
    c.add_argument("--out", help="run directory (created, or resumed if it exists); required unless --probe")
    c.add_argument("--copies", type=int, help="copies in the System (new run; default 16)")
    c.add_argument("--temperature", type=float, help="kelvin (new run; default 340)")
    c.add_argument("--interval-ps", type=float, help="saving interval of a new run (ps; default 10)")
    c.add_argument("--chunk-frames", type=int, help="frames per chunk = checkpoint interval (new run; default 50)")
    c.add_argument("--start-from", help="earlier run directory whose all-atom frames seed the copies (new run)")
    c.add_argument("--start-near", help="bead PDB (e.g. data/cln025_folded_ca.pdb): half the starts are the frames "
                                        "closest to it instead of the most compact ones (new run)")
    c.add_argument("--equilibrium-starts", action="store_true", default=None,
                   help="draw the starts at random from --start-from, a run sampling equilibrium at --temperature: "
                        "the copies' frames are then equilibrium frames (new run)")
    c.add_argument("--platform", help="OpenMM platform for a new run: CPU (default), OpenCL, CUDA")
    c.add_argument("--threads", type=int, help="CPU threads for a new run (default 1)")
    c.add_argument("--seed", type=int, help="seed for a new run (default 0)")
    c.add_argument("--max-minutes", type=float, help="stop cleanly (chunk + checkpoint) after this many minutes")
    c.add_argument("--probe", type=int, nargs="+", metavar="K",
                   help="only measure ns/day for these numbers of copies on --platform, print JSON and exit")
    rp = dsub.add_parser("report", help="sampling report of alanine dipeptide runs (basins, αL visits)")
    rp.add_argument("runs", nargs="+", help="run directories")
    fo = dsub.add_parser("folding", help="folding report of chignolin runs: folded reference, transitions, MSM")
    fo.add_argument("runs", nargs="+", help="run directories (plain, replica-exchange or copies runs)")
    fo.add_argument("--check-against", help="a PDB whose Cα the folded reference is compared with (a check only)")
    ti = dsub.add_parser("tica", help="fit the TICA model of a dataset on its reference trajectories and save it "
                                      "(data/<dataset>_tica.npz, registered); run before `data histograms`")
    ti.add_argument("dataset", choices=["cln025"], help="a dataset whose system has a TICA observable")
    hi = dsub.add_parser("histograms", help="(re)write data/<dataset>_histograms.npz, the saved reference histograms of "
                                            "every observable the dataset's system owns, and register its sha256")
    hi.add_argument("dataset", help="registered dataset name, e.g. cln025")
    b = dsub.add_parser("build", help="assemble data/<system>.npz from run directories and register its sha256")
    b.add_argument("system", choices=sorted(CG_SYSTEMS))
    b.add_argument("runs", nargs="+", help="run directories (replica-exchange, plain or copies runs); runs saved at "
                                           "different intervals are thinned to the longest")
    b.add_argument("--data-dir", help="folder to write the dataset and its registry to (default: the package's data/)")
    t = sub.add_parser("train-kernel", help="train a molecular reverse-noise flow (coupling or CNF) and save it")
    t.add_argument("kind", choices=["coupling", "cnf"])
    t.add_argument("--dataset", required=True, help="registered dataset name, or an npz with positions (Å) and temperature (K)")
    t.add_argument("--noise-std", type=float, required=True, help="σ_n, standard deviation of the mean-free noise (Å)")
    t.add_argument("--prior-std", type=float, help="σ_p of the CNF's base around c (Å; default: --noise-std)")
    t.add_argument("--steps", type=int, help="training steps (default: chapter 2's, 4000 coupling / 8000 CNF, minutes "
                                            "on a laptop; the paper trains ~100× longer, a GPU's work)")
    t.add_argument("--batch-size", type=int, default=256)
    t.add_argument("--lr", type=float, default=5e-4)
    t.add_argument("--size", choices=["paper", "small"], default="small",
                   help="small (default): CPU-sized, chapter 2's (coupling 4×1, d_model 64; EGNN 32×3); paper: the "
                        "sizes of Klein et al., for a GPU (coupling 8×3, d_model 128; EGNN 64×5)")
    t.add_argument("--out", required=True, help="flow file to write (.pt)")
    t.add_argument("--checkpoint", help="checkpoint file (resumed if present)")
    t.add_argument("--device", default="cpu")
    t.add_argument("--seed", type=int, default=0)
    st = sub.add_parser("study", help="from one's own frames to scored CG models: every label source at every noise std "
                                      "trained, simulated and scored against the frames, with a report (resumable)")
    st.add_argument("--dataset", required=True, help="npz with positions (frames, beads, 3) in Å and temperature in K; "
                                                    "optional forces (kcal/mol/Å), weights, bead_names, bead_masses (amu), "
                                                    "traj_ids")
    st.add_argument("--sources", nargs="+", default=["reference", "noise", "coupling", "cnf"],
                    choices=["reference", "noise", "coupling", "cnf"])
    st.add_argument("--noise-std", type=float, nargs="+", default=[0.05], help="noise stds of the kernels (Å)")
    st.add_argument("--masses", type=float, nargs="+", help="bead masses (amu), one per bead (default: the file's "
                                                            "bead_masses, else from the bead names' elements)")
    st.add_argument("--quick", action="store_true", help="a try-out budget: every stage in minutes, far from converged")
    st.add_argument("--out", required=True, help="report folder (results.json, report.md, figures/, models/)")
    st.add_argument("--device", default="cpu")
    lab = sub.add_parser("label", help="label frames with a kernel (resumable; shard with torchrun)")
    lab.add_argument("--dataset", required=True, help="registered dataset name, or an npz with positions (Å) and temperature (K)")
    lab.add_argument("--kernel", required=True, help="'noise', a registered flow (e.g. ala2-coupling-0.05; `opforce models` "
                                                      "lists them) or the path of a flow file from `opforce train-kernel`")
    lab.add_argument("--noise-std", type=float, help="σ of the noise kernel (Å); flow kernels use their training σ")
    lab.add_argument("--data-fraction", type=float, default=0.1)
    lab.add_argument("--repeats", type=int, default=10)
    lab.add_argument("--batch-size", type=int, default=256)
    lab.add_argument("--seed", type=int, default=0)
    lab.add_argument("--solver", choices=["dopri5", "rk4"], default="dopri5", help="CNF only")
    lab.add_argument("--memory-gb", type=float, help="CNF only: memory for one chunk of labels, from which the chunk "
                                                     "size is planned (GB; default 2 on a CPU, half the free GPU memory)")
    lab.add_argument("--out", required=True, help="labelled set (.npz)")
    lab.add_argument("--device", default="cpu", help="cpu or cuda (under torchrun: each rank's LOCAL_RANK GPU)")
    return parser


def _main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    from . import pretrained

    if args.command == "pretrain":
        for name in args.name:
            entry = pretrained.pretrain(name, device=args.device)
            print(f"{name}: wrote models/{entry['file']} in {entry['wall_time_s']} s")
            print(json.dumps(entry["metrics"], indent=2))
        return 0
    if args.command == "replicate":
        return _replicate(args)
    if args.command == "study":
        return _study(args)
    if args.command == "long-run":
        return _long_run(args)
    if args.command == "train-kernel":
        return _train_kernel(args)
    if args.command == "label":
        return _label(args)
    if args.command == "data" and args.data_command == "report":
        from .data.report import ala2_report

        print(json.dumps(ala2_report(args.runs), indent=2, ensure_ascii=False))
        return 0
    if args.command == "data" and args.data_command == "folding":
        from .data.folding import analyse_folding

        report = analyse_folding(args.runs, check_pdb=args.check_against)[0]
        print(json.dumps(report, indent=2, ensure_ascii=False))
        return 0
    if args.command == "data" and args.data_command == "tica":
        from .data.tica import LAGS, fit_tica
        from .systems.cln025 import tica_features

        print(json.dumps(fit_tica(args.dataset, tica_features, LAGS[args.dataset]), indent=2, ensure_ascii=False))
        return 0
    if args.command == "data" and args.data_command == "histograms":
        from .data.dataset import write_reference_histograms

        print(json.dumps(write_reference_histograms(args.dataset), indent=2, ensure_ascii=False))
        return 0
    if args.command == "data" and args.data_command == "build":
        from .data.builders import DATASET_BUILDERS
        from .data.molecules import SYSTEMS

        names = SYSTEMS[args.system]().bead_names
        entry = DATASET_BUILDERS[args.system](args.runs, names, Path(args.data_dir) if args.data_dir else None)
        print(json.dumps(entry, indent=2, ensure_ascii=False))
        return 0
    if args.command == "data" and args.data_command == "copies":
        return _copies(args)
    if args.command == "data":
        from .data.remd import ReplicaExchange

        asked = _given(system=args.system, platform=args.platform, threads=args.threads, seed=args.seed,
                       exchange_every_ps=args.interval_ps, chunk_frames=args.chunk_frames,
                       temperatures=sorted(args.temperatures) if args.temperatures else None)
        check_positive(args.ns, "--ns", "ns")
        ReplicaExchange(args.out, asked=asked).run(args.ns)
        return 0
    return _verify_files()


def _verify_files() -> int:
    """``opforce models``: every registered file (weights, saved simulations, datasets, histograms, the
    registries and results files) exists, matches its sha256 and loads; 1 if anything is wrong."""
    from . import pretrained
    from .data.dataset import DATA_DIR, verified_path
    from .storage import read_json

    problems = []

    def check(label: str, what: str, fn, fix: str = ""):
        try:
            fn()
            print(f"ok       {label:28s} {what}")
        except Exception as err:  # report every kind of failure, then go on to the next file
            problems.append(label)
            print(f"BROKEN   {label:28s} {' '.join(str(err).split())}{'; ' + fix if fix and fix not in str(err) else ''}")

    registry_path = pretrained.REGISTRY
    if not registry_path.exists():
        print(f"BROKEN   {'models registry':28s} {registry_path} is missing; restore it with `git checkout -- models/`")
        return 1
    registry = {}
    models_dir = registry_path.parent
    check("models registry", str(registry_path), lambda: registry.update(pretrained.read_registry(registry_path)))
    for name, entry in sorted(registry.items()):
        fix = f"rebuild it with `{pretrained.rebuild_command(name)}`"
        check(name, f"{entry.get('file')}  (made by: {entry.get('command')})", lambda: pretrained.load(name, models_dir), fix)
        if "samples" in entry:
            check(f"{name} samples", entry["samples"]["file"], lambda: pretrained.load_samples(name, models_dir), fix)
    for name in sorted(set(pretrained._specs()) - set(registry)):
        if not pretrained._specs()[name].required:  # a chapter still being built
            print(f"to build {name:28s} not pretrained yet: `{pretrained.rebuild_command(name)}`")
            continue
        problems.append(name)
        print(f"BROKEN   {name:28s} has no entry in {registry_path}; build it with "
              f"`{pretrained.rebuild_command(name)}`")
    for results in (pretrained.REPLICATES, pretrained.LONG_RUNS):
        path = registry_path.parent / results
        if path.exists():
            check(results, str(path), lambda: read_json(path, "restore it with `git checkout -- models/`"))
    data_registry = DATA_DIR / "registry.json"
    data = {}
    check("data registry", str(data_registry), lambda: data.update(read_json(data_registry)))
    for key, entry in sorted(data.items()):
        check(key, f"data/{entry.get('file')}  (made by: {entry.get('command')})", lambda: verified_path(key, DATA_DIR))
    print(f"{len(problems)} problem(s)" + (f": {', '.join(problems)}" if problems else ""))
    return 1 if problems else 0


def _copies(args) -> int:
    from .data.copies import CopiesConfig, CopiesMD, throughput

    asked = _given(system=args.system, n_copies=args.copies, temperature=args.temperature,
                   save_every_ps=args.interval_ps, chunk_frames=args.chunk_frames, start_from=args.start_from,
                   start_near=args.start_near, equilibrium_starts=args.equilibrium_starts, seed=args.seed,
                   platform=args.platform, threads=args.threads)
    if args.probe:
        for k in args.probe:
            print(json.dumps(throughput(CopiesConfig(**{**asked, "n_copies": k}))), flush=True)
        return 0
    if args.ns is None or args.out is None:
        print("opforce data copies: --ns and --out are required (unless --probe)", file=sys.stderr)
        return 2
    check_positive(args.ns, "--ns", "ns")
    CopiesMD(args.out, asked=asked).run(args.ns, max_minutes=args.max_minutes)
    return 0


def _given(**settings) -> dict:
    """The run settings a command line set (flags left out are None and take the run's or the defaults)."""
    return {k: v for k, v in settings.items() if v is not None}


def _replicate(args) -> int:
    from . import pretrained

    for name in args.name:
        for seed in args.seeds:
            done = pretrained.current_replicates().get(name, {}).get(str(seed))
            if done and not args.redo:
                print(f"{name} seed {seed}: recorded already ({done['created']}); --redo to rerun")
                continue
            entry = pretrained.replicate(name, seed, device=args.device)
            print(f"{name} seed {seed}: {entry['wall_time_s']} s; populations "
                  + json.dumps({b: round(p["mean"], 3) for b, p in entry["metrics"]["populations"].items()},
                               ensure_ascii=False))
    return 0


def _long_run(args) -> int:
    from . import pretrained

    check_positive(args.ns, "--ns", "ns")
    for name in args.name:
        done = pretrained.long_runs().get(name, {}).get(f"{args.ns:g}")
        if done and not args.redo:
            print(f"{name}, {args.ns:g} ns: recorded already ({done['created']}); --redo to rerun")
            continue
        entry = pretrained.record_long_run(name, args.ns, device=args.device)
        populations = {b: round(p["mean"], 3) for b, p in entry.get("populations", {}).items()}
        print(f"{name}, {args.ns:g} ns: {entry['wall_time_s']} s; populations "
              + json.dumps(populations, ensure_ascii=False))
    return 0


def _train_kernel(args) -> int:
    import time

    from .data.dataset import load_frames
    from .kernels.cnf import SMALL_EGNN, CNFTraining, EGNNConfig, train_cnf
    from .kernels.coupling import SMALL_COUPLING, CouplingFlowConfig, CouplingTraining, train_coupling_flow
    from .kernels.files import save_flow

    check_positive(args.noise_std, "--noise-std", "Å")
    if args.prior_std is not None:
        check_positive(args.prior_std, "--prior-std", "Å")
    check_positive(args.lr, "--lr")
    args.steps = args.steps or {"coupling": 4000, "cnf": 8000}[args.kind]
    check_count(args.steps, "--steps")
    check_count(args.batch_size, "--batch-size")
    frames = load_frames(args.dataset)
    positions, temperature, name = frames.positions, frames.temperature, frames.name
    types = list(range(positions.shape[1]))  # one type per bead along the chain
    common = dict(n_steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed)
    t0 = time.perf_counter()
    small = args.size == "small"
    if args.kind == "coupling":
        cfg = CouplingFlowConfig(bead_types=types, **(SMALL_COUPLING if small else {}))
        settings = CouplingTraining(noise_std=args.noise_std, **common)
        model, history = train_coupling_flow(positions, cfg, settings, args.device, args.checkpoint)
    else:
        cfg = EGNNConfig(bead_types=types, **(SMALL_EGNN if small else {}))
        settings = CNFTraining(noise_std=args.noise_std, prior_std=args.prior_std or args.noise_std, **common)
        model, history = train_cnf(positions, cfg, settings, args.device, args.checkpoint)
    meta = {"dataset": name, "frames": frames.weighting, "temperature_K": temperature, "val_loss": history["val_loss"][-1],
            "wall_time_s": round(time.perf_counter() - t0, 1), "device": str(args.device)}
    digest = save_flow(args.out, model, settings, meta)
    print(json.dumps({"file": args.out, "sha256": digest, **meta}, indent=2, ensure_ascii=False))
    return 0


def _study(args) -> int:
    from .data.dataset import load_user_dataset
    from .study import QUICK, chain_study, run_study, study_table

    ds = load_user_dataset(args.dataset, masses=args.masses)
    ds.bead_masses  # refuse bead names without an element mass before any work
    study = chain_study(ds, ds.name, tuple(args.noise_std), tuple(args.sources), **(QUICK if args.quick else {}))
    rows = run_study(study, args.out, device=args.device)
    print(study_table({r["model"]: r for r in rows}).to_string(index=False))
    print(f"report: {Path(args.out) / 'report.md'}, figures in {Path(args.out) / 'figures'}")
    return 0


def _registered_temperature(entry: dict) -> float | None:
    """The temperature (K) of the dataset a registered flow was trained on: the registered dataset whose
    sha256 its metrics record (None for a flow trained on no registered dataset)."""
    from .data.dataset import DATA_DIR
    from .storage import read_json

    trained_on = entry.get("metrics", {}).get("dataset_sha256")
    return next((float(d["temperature_K"]) for d in read_json(DATA_DIR / "registry.json").values()
                 if trained_on and d.get("sha256") == trained_on and "temperature_K" in d), None)


def _label(args) -> int:
    import os

    import torch

    from . import pretrained
    from .data.dataset import load_frames
    from .kernels import NoiseKernel
    from .kernels.files import kernel_from_file
    from .labels import LabelSettings, label_frames
    from .units import kbt

    device = args.device
    if device == "cuda" and "LOCAL_RANK" in os.environ:
        device = f"cuda:{os.environ['LOCAL_RANK']}"
        torch.cuda.set_device(device)
    check_count(args.repeats, "--repeats")
    check_count(args.batch_size, "--batch-size")
    frames = load_frames(args.dataset)
    positions, temperature, name = frames.positions, frames.temperature, frames.name
    if args.kernel == "noise":
        if args.noise_std is None:
            raise SystemExit("the noise kernel needs --noise-std (Å)")
        check_positive(args.noise_std, "--noise-std", "Å")
        kernel, digest = NoiseKernel(args.noise_std, kbt(temperature), mean_free=True), None
    else:
        options = {"solver": args.solver} if args.solver != "dopri5" else {}
        if args.memory_gb is not None:
            options["memory_budget_gb"] = check_positive(args.memory_gb, "--memory-gb", "GB")
        if args.kernel in pretrained._specs():  # a registered flow, by name
            kernel, entry = pretrained.load_kernel(args.kernel, kbt(temperature), device, **options)
            trained_at, digest = _registered_temperature(entry), entry["sha256"]
        else:
            kernel, info = kernel_from_file(args.kernel, kbt(temperature), device, **options)
            trained_at, digest = info["metadata"].get("temperature_K"), info["sha256"]
        if trained_at is not None and trained_at != temperature:
            raise ValueError(f"{args.kernel} was trained on data at {trained_at} K, the frames are at {temperature} K")
    settings = LabelSettings(args.data_fraction, args.repeats, args.batch_size, args.seed)
    result = label_frames(positions, kernel, temperature, args.out, settings, device, digest, name,
                          frames=frames.weighting)
    if result is not None:
        print(json.dumps({k: result.metadata[k] for k in ("kernel", "n_labels", "n_dropped", "world_size", "frames")},
                         ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
