"""Benchmark: time chapter 1's pipeline and a cold executed build of the whole book.

Writes ``benchmarks/results/book_build.json`` (timings, machine) and the chapter's main figures to
``benchmarks/results/chapter1_figures.png``. Run with ``make bench``.
"""

import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import torch  # noqa: E402

from opforce_tutorial import plotting, pretrained  # noqa: E402
from opforce_tutorial.chapters.bond_toy import NOISE_VARS, run_study  # noqa: E402
from opforce_tutorial.systems import DoubleWellBond  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "results"


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    plotting.set_style()
    t0 = time.perf_counter()
    flow = pretrained.load("toy1d-flow")[0]
    t_load = time.perf_counter() - t0
    t0 = time.perf_counter()
    study = run_study(DoubleWellBond(), NOISE_VARS, flow, progress=False)
    t_study = time.perf_counter() - t0
    fig = plotting.plot_strategy_grid(study, 0.0025)
    fig.savefig(OUT / "chapter1_figures.png")
    plotting.plot_scores(study.table).savefig(OUT / "chapter1_scores.png")

    shutil.rmtree(ROOT / "book" / "_build", ignore_errors=True)
    t0 = time.perf_counter()
    subprocess.run([str(Path(sys.executable).parent / "jupyter-book"), "build", str(ROOT / "book"), "-W", "--keep-going"],
                   check=True, stdout=subprocess.DEVNULL)
    t_book = time.perf_counter() - t0
    result = {
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip() + f", {os.cpu_count()} cores",
        "torch": torch.__version__,
        "cuda": torch.cuda.is_available(),
        "chapter1_flow_load_s": round(t_load, 3),
        "chapter1_study_s (28 force fields: labels, fits, one batched Langevin run)": round(t_study, 1),
        "book_cold_executed_build_s": round(t_book, 1),
        "date": time.strftime("%Y-%m-%d"),
    }
    (OUT / "book_build.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
