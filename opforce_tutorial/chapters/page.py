"""What every chapter page shows the same way: model names for people, live labels of every kernel, what
the kernels' labelled positions keep, the label sets' sizes and costs, and the pretraining cost table.

Each function computes from a study (:class:`opforce_tutorial.study.Study`), the registered models or
labels made live; tables come back as pandas Stylers formatted for people.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .. import catalog, pretrained
from ..evaluation import evaluate
from ..labels import LabelSettings

KERNELS = ("noise", "coupling", "cnf")
FLOW_KERNELS = ("coupling", "cnf")
#: Every chapter's local gate: a flow-kernel model's mean bond and angle JS over the noise-kernel model's, same σ.
LOCAL_GATE = 1 / 3


def glue_values(values: dict) -> None:
    """Glue every value under its key (``myst_nb.glue``, not displayed), for the page's text to cite."""
    from myst_nb import glue

    for key, value in values.items():
        glue(key, value, display=False)


def display_name(model_name: str) -> str:
    """A registered CG model's name for people: its recipe's ``label``
    (:meth:`~opforce_tutorial.study.Study.display_name`: "ala2-cg-cnf-0.05" → "cnf σ=0.05", "ala2-cg-reference"
    → "reference forces", "ala2-cg-reference-chiral" → "reference forces, + dihedrals")."""
    spec = catalog.specs().get(model_name)
    if spec is None or spec.label is None:
        raise ValueError(f"{model_name!r} is not a published CG recipe (see `opforce models`)")
    return spec.label


def key_of(name: str) -> str:
    """A glue-key fragment of a display name: "cnf σ=0.05" → "cnf005", "reference forces" → "ref"."""
    return name.replace("reference forces", "ref").replace(" σ=", "").replace(".", "").replace(" ", "_")


def thousands(n: int) -> str:
    """A count for people, digits grouped by a space: 107500 → "107 500"."""
    return f"{int(n):,}".replace(",", " ")


def met(ok: bool) -> str:
    """A gate's verdict as the tables print it."""
    return "met" if ok else "not met"


def pm(mean: float, err: float, digits: int = 1) -> str:
    return f"{mean:.{digits}f} ± {err:.{digits}f}"


def mean_sd_table(seeds: pd.DataFrame, digits: dict[str, int]) -> pd.DataFrame:
    """Per model (``seeds.model``, one row per training seed) the number of seeds and, for each column of
    ``digits``, "mean ± standard deviation" over its seeds with that many decimals (the mean alone for one
    seed); indexed by :func:`display_name`, in the models' order of appearance."""
    groups = seeds.groupby("model", sort=False)
    rows = {display_name(name): {"seeds": len(runs), **{
        c: pm(runs[c].mean(), runs[c].std(), d) if len(runs) > 1 else f"{runs[c].mean():.{d}f}"
        for c, d in digits.items()}} for name, runs in groups}
    return pd.DataFrame(rows).T


def mean_js(scores: dict, kind: str) -> float:
    """Mean JS over the observables whose name starts with ``kind`` ("bond", "angle", "distance", …)."""
    return float(np.mean([v["js"] for k, v in scores.items() if k.startswith(kind)]))


# ------------------------------------------------------------------------------------------- labels
@dataclass
class LiveLabels:
    """Labels made live on this machine: positions y and labels per "source σ=…", and the cost of each."""

    positions: dict = field(default_factory=dict)
    labels: dict = field(default_factory=dict)
    ms_per_label: dict = field(default_factory=dict)


def live_labels(study, ds, flows: dict, n: int = 2000, n_cnf: int = 500) -> LiveLabels:
    """Every kernel of ``study`` with a flow at hand (``flows[(source, σ)]``; the noise kernel needs none)
    labels ``n`` frames at every σ (the CNF ``n_cnf``: each of its labels solves an ODE), timed."""
    live = LiveLabels()
    for sigma in study.noise_stds:
        for source in KERNELS:
            if source in FLOW_KERNELS and (source, sigma) not in flows:
                continue
            settings = LabelSettings(n_frames=n_cnf if source == "cnf" else n, repeats=1, batch_size=400, seed=1)
            t0 = time.perf_counter()
            y, f, _ = study.labelled_set(source, sigma, ds, flows.get((source, sigma)), settings, progress=False)
            key = f"{source} σ={sigma:g}"
            live.ms_per_label[key] = 1000 * (time.perf_counter() - t0) / len(y)
            live.positions[key], live.labels[key] = y, f
    return live


def kernel_output_table(live: LiveLabels, reference, local: list[str]) -> tuple:
    """What each kernel's live labelled positions y keep of the data: mean bond and angle JS of y over the
    ``local`` observables (floor in brackets) and the ratio to the noise kernel's at the same σ. Returns
    (Styler, {"out_<kind>_<source><σ>": ratio, "over_floor_<kind>_<source><σ>": JS over its floor})."""
    js = {key: evaluate(y, reference, local) for key, y in live.positions.items()}
    return _output_table(js, "out", "live labelled positions y against the data: mean JS over bonds and over "
                                    "angles (floor in brackets), and the ratio to the noise kernel's at the same σ")


def recorded_output_table(study, registry: dict | None = None) -> tuple:
    """The output gate as recorded: each registered flow's JS on :attr:`~opforce_tutorial.study.Study.output_labels`
    (its registry ``metrics.output_js``) beside the noise kernel's on as many labels (made here; cheap), mean
    bond and angle JS (floor in brackets) and the ratio to the noise kernel's (the gate: ≤ 1/3). Returns
    (Styler, {"gate_<kind>_<source><σ>": ratio, "over_floor_<kind>_<source><σ>": JS over its floor})."""
    registry = pretrained.read_registry() if registry is None else registry
    ds, js = study.training_frames(), {}
    for sigma in study.noise_stds:
        js[f"noise σ={sigma:g}"] = study.kernel_output_js("noise", sigma, None, ds)
        for source in FLOW_KERNELS:
            entry = registry.get(study.kernel_name(source, sigma), {})
            if "output_js" in entry.get("metrics", {}):
                js[f"{source} σ={sigma:g}"] = entry["metrics"]["output_js"]
    n = study.output_labels.frames_to_keep(ds.n_frames) * study.output_labels.repeats
    return _output_table(js, "gate", f"the output gate on {thousands(n)} labels per kernel (each flow's as recorded "
                                     "when it was trained): mean JS over bonds and over angles (floor in brackets), "
                                     "and the ratio to the noise kernel's at the same σ (gate: ≤ 1/3)")


def _output_table(js: dict, prefix: str, caption: str) -> tuple:
    """The output table of ``js`` ({"source σ=…": {observable: {"js", "js_floor", "n_samples"}}})."""
    rows, values = {}, {}
    for key, scores in js.items():
        source, sigma = key.split(" σ=")
        row = {}
        for kind in ("bond", "angle"):
            mean = mean_js(scores, kind)
            floor = float(np.mean([v["js_floor"] for k, v in scores.items() if k.startswith(kind)]))
            ratio = mean / mean_js(js[f"noise σ={sigma}"], kind)
            row[f"mean {kind} JS"] = f"{mean:.3f} ({floor:.3f})"
            row[f"{kind}s ÷ noise"] = "" if source == "noise" else f"{ratio:.2f}"
            values[f"{prefix}_{kind}_{source}{sigma.replace('.', '')}"] = float(ratio)
            values[f"over_floor_{kind}_{source}{sigma.replace('.', '')}"] = mean / floor
        row["labels"] = thousands(min(v["n_samples"] for k, v in scores.items() if k.startswith(("bond", "angle"))))
        rows[key] = row
    return pd.DataFrame(rows).T.style.set_caption(caption), values


def label_table(live: LiveLabels, ds) -> pd.io.formats.style.Styler:
    """Size and net force of every label set, and its cost on this machine."""
    rows = {key: {"mean |label| (kcal/mol/Å)": float(np.linalg.norm(f, axis=-1).mean()),
                  "max |net force| (kcal/mol/Å)": float(np.abs(f.sum(axis=1)).max()),
                  "ms per label": live.ms_per_label[key]} for key, f in live.labels.items()}
    rows["reference"] = {"mean |label| (kcal/mol/Å)": float(np.linalg.norm(ds.forces, axis=-1).mean()),
                         "max |net force| (kcal/mol/Å)": float(np.abs(ds.forces.sum(axis=1)).max()),
                         "ms per label": 0.0}
    return pd.DataFrame(rows).T.style.format("{:.3g}").set_caption("label sets (made live on this machine)")


# ----------------------------------------------------------------------------------------------- cost
def cost_table(prefix: str) -> pd.io.formats.style.Styler:
    """Wall time of every pretrained object whose name starts with ``prefix``, on the machine its registry
    entry names."""
    registry = pretrained.read_registry()
    rows = {name: {"wall time (min)": f"{e['wall_time_s'] / 60:.1f}", "device": e["device"], "command": e["command"]}
            for name, e in registry.items() if name.startswith(prefix)}
    return pd.DataFrame(rows).T.style.set_caption(
        "pretraining cost (opforce pretrain; for a CG model: its labels, force matching and 64-replica simulation)")
