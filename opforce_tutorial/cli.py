"""The ``opforce`` command line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="opforce", description="Operator forces for coarse-grained MD.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pretrain", help="train a registered model and write it to models/ with its registry entry")
    p.add_argument("name", nargs="+", help="registered model name(s), e.g. toy1d-flow")
    p.add_argument("--device", default="cpu", help="torch device to train on (cpu, cuda)")
    sub.add_parser("models", help="list registered pretrained models and verify their checksums")
    d = sub.add_parser("data", help="generate reference MD data")
    dsub = d.add_subparsers(dest="data_command", required=True)
    r = dsub.add_parser("md", help="run or extend (resume) MD: replica exchange over several temperatures, "
                                   "plain Langevin MD with one")
    r.add_argument("system", choices=["ala2", "cln025"])
    r.add_argument("--ns", type=float, required=True, help="target length of the lowest-temperature replica (ns)")
    r.add_argument("--out", required=True, help="run directory (created, or resumed if it exists)")
    r.add_argument("--temperatures", type=float, nargs="+", help="kelvin, lowest first (new run; default: ladder of REMDConfig)")
    r.add_argument("--interval-ps", type=float, default=1.0, help="exchange and saving interval of a new run (ps)")
    r.add_argument("--chunk-frames", type=int, default=500, help="frames per chunk = checkpoint interval of a new run")
    r.add_argument("--platform", default="CPU", help="OpenMM platform for a new run: CPU, OpenCL, CUDA")
    r.add_argument("--threads", type=int, default=1, help="CPU threads for a new run")
    r.add_argument("--seed", type=int, default=0, help="seed for a new run")
    rp = dsub.add_parser("report", help="sampling report of alanine dipeptide runs (basins, αL visits)")
    rp.add_argument("runs", nargs="+", help="run directories")
    b = dsub.add_parser("build", help="assemble data/<system>.npz from run directories and register its sha256")
    b.add_argument("system", choices=["ala2", "cln025"])
    b.add_argument("runs", nargs="+", help="replica-exchange run directories")
    args = parser.parse_args(argv)

    from . import pretrained

    if args.command == "pretrain":
        for name in args.name:
            entry = pretrained.pretrain(name, device=args.device)
            print(f"{name}: wrote models/{entry['file']} in {entry['wall_time_s']} s")
            print(json.dumps(entry["metrics"], indent=2))
        return 0
    if args.command == "data" and args.data_command == "report":
        from .data.report import ala2_report

        print(json.dumps(ala2_report(args.runs), indent=2, ensure_ascii=False))
        return 0
    if args.command == "data" and args.data_command == "build":
        from .data.dataset import build_dataset
        from .data.molecules import SYSTEMS

        entry = build_dataset(args.system, args.runs, SYSTEMS[args.system]().bead_names)
        print(json.dumps(entry, indent=2))
        return 0
    if args.command == "data":
        from .data.remd import REMDConfig, ReplicaExchange

        config = None
        if not (Path(args.out) / "run.json").exists():
            config = REMDConfig(system=args.system, platform=args.platform, threads=args.threads, seed=args.seed,
                                exchange_every_ps=args.interval_ps, chunk_frames=args.chunk_frames)
            if args.temperatures:
                config.temperatures = sorted(args.temperatures)
        ReplicaExchange(args.out, config).run(args.ns)
        return 0
    status = 0
    for name, entry in sorted(pretrained.read_registry().items()):
        try:
            pretrained.load(name)
            print(f"ok       {name:20s} {entry['file']}  (made by: {entry['command']})")
        except pretrained.PretrainedError as err:
            print(f"BROKEN   {name:20s} {err}")
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
