"""The ``opforce`` command line."""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="opforce", description="Operator forces for coarse-grained MD.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pretrain", help="train a registered model and write it to models/ with its registry entry")
    p.add_argument("name", nargs="+", help="registered model name(s), e.g. toy1d-flow")
    p.add_argument("--device", default="cpu", help="torch device to train on (cpu, cuda)")
    sub.add_parser("models", help="list registered pretrained models and verify their checksums")
    args = parser.parse_args(argv)

    from . import pretrained

    if args.command == "pretrain":
        for name in args.name:
            entry = pretrained.pretrain(name, device=args.device)
            print(f"{name}: wrote models/{entry['file']} in {entry['wall_time_s']} s")
            print(json.dumps(entry["metrics"], indent=2))
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
