"""Print ``benchmarks/results/ala2_ablation.json`` as the Markdown table the README shows.

Kernel-output rows give the mean bond and angle JS of 4 000 labelled positions y against the data, and
their ratio to the noise kernel's at the same σ (the chapter-2 output gate asks for ≤ 1/3); CG rows give
the model's mean bond, angle and Ramachandran JS and its αR population (64 replicas × 100 ps). ``python benchmarks/ablation_table.py``
"""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "ala2_ablation.json"


def rows(results: dict) -> list[str]:
    variants = results["variants"]
    out = ["| variant | mean bond JS | × noise | mean angle JS | × noise | Ramachandran JS | αR % | wall (s) |",
           "|---|---|---|---|---|---|---|---|"]
    for name, v in variants.items():
        sigma = name.rsplit(", ", 1)[-1]
        noise = variants.get(f"noise kernel output, {sigma}") if "output" in name else None

        def ratio(key):
            return f"{v[key] / noise[key]:.2f}" if noise and v.get(key) is not None else ""

        rama = f"{v['ramachandran_js']:.3f}" if v.get("ramachandran_js") is not None else ""
        ar = f"{100 * v['populations']['αR']['mean']:.1f}" if "populations" in v else ""
        out.append(f"| {name} | {v['mean_bond_js']:.4f} | {ratio('mean_bond_js')} | {v['mean_angle_js']:.4f} | "
                   f"{ratio('mean_angle_js')} | {rama} | {ar} | {v['wall_s']:.0f} |")
    return out


if __name__ == "__main__":
    results = json.loads(RESULTS.read_text())
    print(f"({results['machine']})\n")
    print("\n".join(rows(results)))
