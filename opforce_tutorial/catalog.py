"""The catalog of named recipes: what ``opforce pretrain NAME``, ``replicate`` and ``long-run`` resolve.

General code knows recipes only through this catalog; it imports no chapter. A chapter (or any other
package: a user's own system) publishes its recipes as a Python entry point of the group
``opforce_tutorial.recipes`` whose object is a function returning ``{name: ModelSpec}``; this
package's own are declared in ``pyproject.toml``::

    [project.entry-points."opforce_tutorial.recipes"]
    bond_toy = "opforce_tutorial.chapters.bond_toy:recipes"
    ala2 = "opforce_tutorial.chapters.ala2:recipes"

The entry points are read once per process, when a name is first looked up.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Callable

import torch

GROUP = "opforce_tutorial.recipes"


@dataclass
class ModelSpec:
    """How to train a registered model and how to rebuild it from its saved config."""

    # (device, work_dir) -> (model, config, training, metrics, samples): samples is an array the model
    # produced (e.g. a CG model's simulated trajectory), saved next to the weights, or None. work_dir (or
    # None) holds the run's checkpoints and labels, so that a killed run resumes where it stopped.
    train: Callable[[str, Path | None], tuple]
    build: Callable[[dict], torch.nn.Module]  # config -> untrained model
    file: str
    # (seed, device, work_dir) -> metrics of the same training run with another seed
    replicate: Callable[[int, str, Path | None], dict] | None = None
    # (model, ns, device, checkpoint) -> results of the model simulated for ns per replica (`opforce long-run`)
    long_run: Callable[[torch.nn.Module, float, str, str | None], dict] | None = None
    # False for a recipe whose chapter does not ship yet: `opforce models` lists it as to be built, not broken
    required: bool = True
    # () -> the registry ``training`` the recipe records now (JSON-ready): a registered entry recorded with
    # other settings is out of date, and loading it is refused (`pretrained.settings_changes`). None: unchecked.
    settings: Callable[[], dict] | None = None
    # the model's name in the pages' tables and legends ("reference forces, + dihedrals"); None: a model the
    # pages do not name (a flow, the prior-only run); `chapters.page.display_name` refuses it
    label: str | None = None


_CATALOG: dict[str, ModelSpec] = {}


def specs() -> dict[str, ModelSpec]:
    """Every published recipe, by name (loaded from the entry points on first use)."""
    if not _CATALOG:
        found = entry_points(group=GROUP)
        if not found:
            raise RuntimeError(f"no recipes are published under the entry-point group {GROUP!r}: install the "
                               "package (`pip install -e .`) so that its chapters register their models")
        for ep in sorted(found, key=lambda e: e.name):
            for name, spec in ep.load()().items():
                if name in _CATALOG:
                    raise RuntimeError(f"recipe {name!r} is published twice (again by entry point {ep.name!r})")
                _CATALOG[name] = spec
    return _CATALOG
