"""Self-describing weights files for the molecular flows, and kernels built from them.

A file holds ``{"kind", "config", "training", "metadata", "state_dict"}``: the flow's kind
(``"coupling"`` or ``"cnf"``), its architecture config, the training settings (which fix the kernel's
``noise_std`` and, for the CNF, ``prior_std``, in Å), free-form metadata (dataset, metrics, machine)
and the weights. Loading uses ``torch.load(..., weights_only=True)``: plain containers and tensors only.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch

from ..storage import atomic_torch_save, sha256
from .cnf import CNFDensity, EGNNConfig, EGNNVectorField, memory_budget_gb
from .coupling import CouplingFlow, CouplingFlowConfig
from .reverse import ReverseNoiseKernel

_KINDS = {"coupling": (CouplingFlowConfig, CouplingFlow), "cnf": (EGNNConfig, EGNNVectorField)}


def flow_kind(model: torch.nn.Module) -> str:
    for kind, (_, cls) in _KINDS.items():
        if isinstance(model, cls):
            return kind
    raise TypeError(f"not a molecular flow: {type(model).__name__}")


def save_flow(path: str | Path, model: torch.nn.Module, training, metadata: dict | None = None) -> str:
    """Write ``model`` with its config, training settings (a dataclass) and metadata; returns the sha256."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_torch_save(path, {"kind": flow_kind(model), "config": asdict(model.config), "training": asdict(training),
                             "metadata": metadata or {},
                             "state_dict": {k: v.cpu() for k, v in model.state_dict().items()}})
    return sha256(path)


def load_flow(path: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict]:
    """Rebuild a flow saved by :func:`save_flow`; returns ``(model in eval mode, file contents without weights)``."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"flow file {path} does not exist; train one with `opforce train-kernel ... --out {path}`")
    try:
        saved = torch.load(path, map_location=device, weights_only=True)
        config_cls, model_cls = _KINDS[saved["kind"]]
    except Exception as err:  # unpickling errors, missing keys, unknown kind
        raise ValueError(f"{path} is not a flow file written by opforce_tutorial ({err}); retrain it with "
                         "`opforce train-kernel`") from err
    model = model_cls(config_cls(**saved["config"])).to(device)
    model.load_state_dict(saved["state_dict"])
    info = {k: v for k, v in saved.items() if k != "state_dict"}
    info["sha256"] = sha256(path)
    return model.eval(), info


def kernel_from_file(path: str | Path, kbt: float, device: str | torch.device = "cpu", **kernel_options):
    """The reverse-noise kernel of a saved flow, with the noise widths it was trained with.

    ``kernel_options`` go to :class:`~.cnf.CNFDensity` (``solver``, ``rtol``, ``atol``, ``chunk_size``,
    ``method``, ``memory_budget_gb``; by default the budget of ``device``, :func:`~.cnf.memory_budget_gb`).
    Returns ``(kernel, info)``; ``info["sha256"]`` is the file's checksum.
    """
    model, info = load_flow(path, device)
    return reverse_kernel(model, info["training"], kbt, device, **kernel_options), info


def reverse_kernel(model: torch.nn.Module, training: dict, kbt: float, device: str | torch.device = "cpu",
                   **kernel_options) -> ReverseNoiseKernel:
    """The reverse-noise kernel of a trained flow (coupling flow or CNF vector field) with the noise widths
    of its ``training`` settings (``noise_std``, and the CNF's ``prior_std``); options as in
    :func:`kernel_from_file`."""
    if flow_kind(model) == "coupling":
        if kernel_options:
            raise ValueError(f"the coupling-flow kernel takes no options, got {sorted(kernel_options)}")
        return ReverseNoiseKernel(model.to(device), training["noise_std"], kbt, mean_free=True)
    kernel_options.setdefault("memory_budget_gb", memory_budget_gb(device))
    density = CNFDensity(model.to(device), prior_std=training["prior_std"], **kernel_options)
    return ReverseNoiseKernel(density, training["noise_std"], kbt, mean_free=True)
