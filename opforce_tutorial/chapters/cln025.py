"""Chapter 3: chignolin (CLN025), as a configuration of the study (:mod:`opforce_tutorial.study`).

Data: ``data/cln025.npz`` (10 Cα beads, 340 K, MSM weights; see data/README.md), used as an equilibrium
sample (the MSM weights become repeated frames for labels, priors and flows; the reference histograms
are weighted). Label sources: reference forces (the mapped Cα forces), the noise kernel, the coupling-flow
and the CNF reverse kernels, each at :data:`NOISE_STDS`.

Noise levels. The paper's σ = 0.05 Å; the Cα–Cα bonds of our data fluctuate by 0.056–0.059 Å (standard
deviation at 340 K), so 0.05 Å is just under one bond width, and the second level, 0.1 Å, is about 1.7
bond widths: noise that visibly broadens the bonds, the regime where a reverse kernel has to earn its
cost (chapter 2 uses the same two values).

Labels: the paper's protocol, 10 % of the frames with 10 kernel draws each (about 50 000 labels per
source; the reference source takes as many frames with their forces). Flows and CG model: the study's
CPU recipes (chapter 2's) with bead types by residue and a 12 Å network cutoff (the hairpin's
folded Cα pairs across the turn sit within 6–10 Å); simulation: BAOAB at 340 K.

Every model of the chapter is pretrained (``opforce models`` verifies them); the longer-budget reference
variant (:data:`LONG_REFERENCE`) is a measurement, not required.
"""

from __future__ import annotations

from dataclasses import replace

from ..labels import LabelSettings
from ..study import CPU_CG, CPU_FLOWS, OUTPUT_LABELS, CGVariant, Study
from ..systems.cln025 import BEAD_NAMES, SYSTEM, folding_transitions

NOISE_STDS = (0.05, 0.1)
#: One bead type per residue kind (TYR, ASP, PRO, GLU, THR, GLY, TRP), in order of first appearance.
BEAD_TYPES = [list(dict.fromkeys(BEAD_NAMES)).index(name) for name in BEAD_NAMES]
LABELS = LabelSettings(data_fraction=0.1, repeats=10, batch_size=256, seed=0)

#: The reference forces with 4 × the force-matching budget (12 000 steps, patience 30, as chapter 2's
#: ablation): chapter 3's reference-forces model folds far less than the data and pushes towards the fold
#: more weakly than its labels (the chapter's "Where the fold is lost"). Measured: early stopping ends it at
#: step 5 800 with the best step 2 800, the 3 000-step fit's own, so its weights are that model's.
LONG_REFERENCE = "cln025-cg-reference-12k"
LONG_FM = replace(CPU_CG.force_matching, n_steps=12_000, patience=30)

STUDY = Study(name="cln025", dataset="cln025", system=SYSTEM, bead_types=BEAD_TYPES, noise_stds=NOISE_STDS,
              flows=dict(CPU_FLOWS), labels=LABELS, output_labels=OUTPUT_LABELS, cg=replace(CPU_CG, cutoff=12.0),
              variants=(CGVariant(LONG_REFERENCE, "reference", force_matching=LONG_FM, required=False,
                                  label="12k steps"),),
              long_run_analysis=folding_transitions)

kernel_name, cg_name, cg_model_names = STUDY.kernel_name, STUDY.cg_name, STUDY.cg_model_names
training_frames, reference_histograms, score = STUDY.training_frames, STUDY.reference_histograms, STUDY.score
recipes = STUDY.recipes
