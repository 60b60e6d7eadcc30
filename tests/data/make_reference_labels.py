"""Write ``reference_labels.npz``: labels of every registered chapter-2 flow on 6 fixed data frames.

The redesign of the kernels (one ``ReverseNoiseKernel`` around every conditional density) must give
the same labels for the same seeds; ``tests/test_kernels.py`` compares against this file. Made with
``python tests/data/make_reference_labels.py`` before the redesign (commit ece3b55), on the CPU.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from opforce_tutorial.data.dataset import load_dataset
from opforce_tutorial import pretrained
from opforce_tutorial.chapters import ala2
from opforce_tutorial.units import kbt

FLOWS = (("coupling", 0.05), ("coupling", 0.1), ("cnf", 0.05), ("cnf", 0.1))
FRAMES = np.arange(0, 60_000, 10_000)
SEED = 11


def reference_labels() -> dict[str, np.ndarray]:
    ds = load_dataset("ala2")
    x = torch.as_tensor(ds.positions[FRAMES])
    out = {"frames": FRAMES, "cpu_capability": np.array(torch.backends.cpu.get_cpu_capability()),
           "torch": np.array(torch.__version__)}
    for source, noise_std in FLOWS:
        name = ala2.kernel_name(source, noise_std)
        flow, entry = pretrained.load(name)
        out[f"{name}/sha256"] = np.array(entry["sha256"])
        kernel = ala2.make_kernel(source, noise_std, kbt(ds.temperature), flow)
        y, f = kernel.sample_with_forces(x, generator=torch.Generator().manual_seed(SEED))
        out[f"{name}/y"], out[f"{name}/labels"] = y.detach().numpy(), f.detach().numpy()
    return out


if __name__ == "__main__":
    torch.set_num_threads(1)
    np.savez(Path(__file__).with_name("reference_labels.npz"), **reference_labels())
