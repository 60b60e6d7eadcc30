"""Chapter 3's study (CLN025) end to end on a tiny 10-bead set: labels → CG model → simulation → every evaluator."""

from dataclasses import replace

import numpy as np
import pytest

from opforce_tutorial.chapters import cln025
from opforce_tutorial.data.dataset import CGDataset, load_dataset
from opforce_tutorial.observables import observable

from test_study import TINY


@pytest.fixture(scope="module")
def tiny_study():
    ds = load_dataset("cln025")
    pick = np.r_[0:600, 30_000:30_600]  # two stretches of two trajectories, weights kept
    small = CGDataset("cln025-tiny", ds.positions[pick], ds.forces[pick], ds.temperature, ds.traj_ids[pick],
                      ds.save_interval_ps, ds.bead_names, ds.weights[pick], masses=ds.masses)
    return replace(cln025.STUDY, dataset=small, flows=dict(TINY["flows"]), labels=TINY["labels"],
                   output_labels=TINY["output_labels"], cg=replace(TINY["cg"], cutoff=12.0))


@pytest.mark.parametrize("source", ["reference", "noise", "coupling", "cnf"])
def test_every_label_source_runs_through_every_evaluator(tiny_study, source):
    ds = tiny_study.training_frames()
    flow = None
    if source in ("coupling", "cnf"):
        flow = tiny_study.fit_flow(ds, source, 0.05, 0, "cpu")[0].eval()
        out = tiny_study.kernel_output_js(source, 0.05, flow, ds)
        assert len(out) == 9 + 8  # bonds and angles of the 10-bead chain
    run, metrics, _ = tiny_study.cg_run(ds, source, 0.05 if source != "reference" else None, flow, 0, "cpu")
    assert run.trajectory.shape == (4, 4, 10, 3) and np.isfinite(run.trajectory).all()
    owned = {observable(o).name for o in cln025.SYSTEM.observables}
    assert set(metrics["js"]) == owned and all(0 <= v["js"] <= np.log(2) for v in metrics["js"].values())
    folded = metrics["populations"]["folded"]["mean"]
    assert 0 <= folded <= 1 and folded + metrics["populations"]["unfolded"]["mean"] == pytest.approx(1.0)


def test_the_chapter_recipes_are_published_and_not_yet_required():
    from opforce_tutorial import pretrained

    specs = pretrained._specs()
    names = [n for n in specs if n.startswith("cln025-")]
    assert "cln025-cg-reference" in names and "cln025-cnf-0.1" in names and len(names) == 1 + 2 * 3 + 2 * 2
    assert not any(specs[n].required for n in names) and all(specs[n].required for n in specs if n.startswith("ala2-"))
    assert cln025.BEAD_TYPES == [0, 0, 1, 2, 3, 4, 5, 4, 6, 0]
    assert cln025.STUDY.labels.frames_to_keep(49_960) == 4996 and cln025.STUDY.labels.repeats == 10


def test_the_gpu_script_trains_every_chapter_3_model_after_its_flow():
    import subprocess
    import sys
    from pathlib import Path

    from opforce_tutorial import pretrained

    script = (Path(__file__).parent.parent / "benchmarks" / "gpu_chapter3.sh").read_text()
    lister = script.split("CHAINS=${CHAINS:-$(python3 -c \"", 1)[1].split("\")}", 1)[0]
    chains = subprocess.run([sys.executable, "-c", lister], capture_output=True, text=True, check=True).stdout.strip()
    names = [n for chain in chains.split(";") for n in chain.split(",")]
    assert sorted(names) == sorted(n for n in pretrained._specs() if n.startswith("cln025-"))
    for chain in chains.split(";"):
        *flows, cg = chain.split(",")
        if flows:
            assert cg == "cln025-cg-" + flows[0].removeprefix("cln025-")
