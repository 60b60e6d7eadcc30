"""Chapter 2's pipeline through the registry, on the shipped dataset with tiny settings."""

import numpy as np
import pytest

from opforce_tutorial import ala2, pretrained
from opforce_tutorial.cg.pipeline import CGRunSettings
from opforce_tutorial.cg.training import ForceMatchingSettings
from opforce_tutorial.labels import LabelSettings


@pytest.fixture
def tiny(monkeypatch):
    monkeypatch.setattr(ala2, "COUPLING_STEPS", 10)
    monkeypatch.setattr(ala2, "LABELS", LabelSettings(0.01, 2, 64))
    monkeypatch.setattr(ala2, "CG_SETTINGS", CGRunSettings(hidden=8, n_rbf=8, n_replicas=4, n_steps=200, save_every=50,
                                                           burn_in=0, force_matching=ForceMatchingSettings(
                                                               n_steps=20, eval_every=10, batch_size=32)))
    monkeypatch.setattr(pretrained, "_TRAINED", {})
    monkeypatch.setenv("OPFORCE_TRAIN", "always")


def test_cg_model_of_the_coupling_kernel_trains_its_kernel_once_and_scores(tiny):
    name = ala2.cg_name("coupling", 0.05)
    model = pretrained.load_or_train(name)
    assert set(pretrained._TRAINED) == {name, "ala2-coupling-0.05"}
    traj = pretrained.samples(name)
    assert traj.shape == (4, 4, 5, 3) and np.isfinite(traj).all()
    scores = ala2.score(traj, ala2.reference_histograms())
    assert set(scores["js"]) >= {"bond 0-1", "angle 1-2-3", "ramachandran"}
    assert model.net.config.hidden == 8


def test_every_chapter_object_is_registered_with_a_rebuild_command():
    specs = pretrained._specs()
    for sigma in ala2.NOISE_STDS:
        for source in ("coupling", "cnf"):
            assert ala2.kernel_name(source, sigma) in specs
        for source in ("noise", "coupling", "cnf"):
            assert ala2.cg_name(source, sigma) in specs
    assert "ala2-cg-reference" in specs
    with pytest.raises(ValueError, match="no kernel"):
        ala2.make_kernel("reference", 0.05, 0.6)
