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
])
def test_model_names_for_people_and_for_glue_keys(name, shown, key):
    assert display_name(name) == shown and key_of(shown) == key


def test_mean_js_and_errors_for_people():
    scores = {"bond 0-1": {"js": 0.1}, "bond 1-2": {"js": 0.3}, "angle 0-1-2": {"js": 5.0}}
    assert mean_js(scores, "bond") == pytest.approx(0.2) and mean_js(scores, "angle") == 5.0
    assert pm(9.123, 2.87) == "9.1 ± 2.9" and pm(0.5, 0.25, 2) == "0.50 ± 0.25"
    assert thousands(107500) == "107 500" and thousands(30) == "30" and thousands(1_000_000) == "1 000 000"
