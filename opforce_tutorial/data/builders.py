"""How each system's shipped dataset is assembled from its run directories (``opforce data build``)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable


def _ala2(run_dirs, bead_names, data_dir):
    from .report import write_ala2_dataset

    return write_ala2_dataset(run_dirs, bead_names, data_dir)


def _cln025(run_dirs, bead_names, data_dir):
    from .folding import write_folding_results

    return write_folding_results(run_dirs, bead_names, data_dir)


#: system name → (run directories, bead names, data folder or None) → the dataset's registry entry.
#: Alanine dipeptide gets basin weights and a sampling report; chignolin MSM weights, a folded reference
#: and a folding report.
DATASET_BUILDERS: dict[str, Callable[[list, list[str], Path | None], dict]] = {"ala2": _ala2, "cln025": _cln025}
