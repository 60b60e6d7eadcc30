"""What every chapter page shows alike (opforce_tutorial.chapters.page)."""

import pytest

from opforce_tutorial.chapters.page import display_name, key_of, mean_js, pm, thousands


@pytest.mark.parametrize("name, shown, key", [
    ("ala2-cg-cnf-0.05", "cnf σ=0.05", "cnf005"),
    ("cln025-cg-noise-0.1", "noise σ=0.1", "noise01"),
    ("ala2-cg-reference", "reference forces", "ref"),
    ("ala2-cg-reference-chiral", "reference forces, + dihedrals", "ref,_+_dihedrals"),
    ("cln025-cg-reference-12k", "reference forces, 12k steps", "ref,_12k_steps"),
    ("ala2-cg-reference-24k", "reference forces, 24k steps", "ref,_24k_steps"),
    ("ala2-cg-reference-ensemble4", "reference forces, ensemble of 4", "ref,_ensemble_of_4"),
    ("ala2-cg-cnf-0.1-paper-labels", "cnf σ=0.1, paper's label protocol", "cnf01,_paper's_label_protocol"),
])
def test_model_names_for_people_and_for_glue_keys(name, shown, key):
    assert display_name(name) == shown and key_of(shown) == key


def test_every_cg_recipe_has_its_own_name_for_people_and_an_unknown_name_is_refused():
    from opforce_tutorial import catalog

    for study in ("ala2", "cln025"):  # within a chapter, every CG model has its own name
        cg = [name for name in catalog.specs() if name.startswith(f"{study}-cg-")]
        assert len(cg) >= 7 and len({display_name(name) for name in cg}) == len(cg)
    with pytest.raises(ValueError, match="not a published CG recipe"):
        display_name("ala2-cg-reference-unknown")


def test_mean_js_and_errors_for_people():
    scores = {"bond 0-1": {"js": 0.1}, "bond 1-2": {"js": 0.3}, "angle 0-1-2": {"js": 5.0}}
    assert mean_js(scores, "bond") == pytest.approx(0.2) and mean_js(scores, "angle") == 5.0
    assert pm(9.123, 2.87) == "9.1 ± 2.9" and pm(0.5, 0.25, 2) == "0.50 ± 0.25"
    assert thousands(107500) == "107 500" and thousands(30) == "30" and thousands(1_000_000) == "1 000 000"


def test_the_recorded_output_gate_sets_each_flow_beside_the_noise_kernel_on_as_many_labels():
    from dataclasses import replace

    from opforce_tutorial.chapters import ala2
    from opforce_tutorial.chapters.page import recorded_output_table
    from opforce_tutorial.labels import LabelSettings

    study = replace(ala2.STUDY, output_labels=LabelSettings(n_frames=300, repeats=1, batch_size=300))
    noise = study.kernel_output_js("noise", 0.05, None)
    third = {k: {**v, "js": v["js"] / 3} for k, v in noise.items()}  # a flow at a third of the noise kernel's JS
    registry = {"ala2-coupling-0.05": {"metrics": {"output_js": third}},
                "ala2-cnf-0.05": {"metrics": {}}}  # registered before the gate was recorded: left out
    table, values = recorded_output_table(study, registry)
    assert list(table.data.index) == ["noise σ=0.05", "coupling σ=0.05", "noise σ=0.1"]
    assert values["gate_bond_coupling005"] == pytest.approx(1 / 3) and values["gate_angle_coupling005"] == pytest.approx(1 / 3)
    assert values["gate_bond_noise01"] == 1.0 and values["over_floor_bond_noise01"] > values["over_floor_bond_noise005"]
    assert table.data.loc["coupling σ=0.05", "bonds ÷ noise"] == "0.33" and table.data.loc["noise σ=0.1", "labels"] == "300"
    assert "on 300 labels per kernel" in table.caption
