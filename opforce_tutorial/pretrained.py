"""Pretrained weights: a registry in ``models/`` and the train-or-load policy.

``models/registry.json`` records, for every pretrained model: its file, sha256, the model config,
the training settings, the exact command that produced it, the metrics it reached, the machine, the
wall time and the package versions. :func:`pretrain` writes file and entry; :func:`load_or_train`
trains when a GPU is present and loads otherwise. Override with ``train=True/False`` or the
environment variable ``OPFORCE_TRAIN`` (``always``/``1`` or ``never``/``0``; ``auto`` is the default).
Files load with ``torch.load(..., weights_only=True)`` after their checksum is verified.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
REGISTRY = MODELS_DIR / "registry.json"
ENV_VAR = "OPFORCE_TRAIN"


class PretrainedError(RuntimeError):
    """A pretrained file is missing, corrupt or unknown; the message says how to rebuild it."""


@dataclass
class ModelSpec:
    """How to train a registered model and how to rebuild it from its saved config."""

    train: Callable[[str], tuple[torch.nn.Module, dict, dict, dict]]  # device -> (model, config, training, metrics)
    build: Callable[[dict], torch.nn.Module]  # config -> untrained model
    file: str


def _specs() -> dict[str, ModelSpec]:
    from .kernels.flow1d import Flow1DConfig, Flow1DTraining, NoiseConditionalFlow1D, train_flow1d
    from .systems import DoubleWellBond

    def train_toy_flow(device):
        training = Flow1DTraining()
        flow, metrics = train_flow1d(DoubleWellBond(), training, device=device)
        return flow, asdict(flow.config), asdict(training), metrics

    return {
        "toy1d-flow": ModelSpec(train=train_toy_flow, file="toy1d_flow.pt",
                                build=lambda cfg: NoiseConditionalFlow1D(Flow1DConfig(**cfg))),
    }


def rebuild_command(name: str) -> str:
    return f"opforce pretrain {name}"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_registry(path: Path = REGISTRY) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def should_train(train: bool | None = None) -> bool:
    """The policy: explicit argument, else ``OPFORCE_TRAIN``, else train iff CUDA is available."""
    if train is not None:
        return bool(train)
    value = os.environ.get(ENV_VAR, "auto").strip().lower()
    if value in ("1", "always", "true", "yes"):
        return True
    if value in ("0", "never", "false", "no"):
        return False
    if value != "auto":
        raise ValueError(f"{ENV_VAR} must be always/1, never/0 or auto, got {value!r}")
    return torch.cuda.is_available()


def load(name: str, models_dir: Path = MODELS_DIR) -> tuple[torch.nn.Module, dict]:
    """Load a registered model after verifying its sha256; returns ``(model, registry entry)``."""
    specs = _specs()
    if name not in specs:
        raise PretrainedError(f"unknown pretrained model {name!r}; known: {sorted(specs)}")
    entry = read_registry(models_dir / "registry.json").get(name)
    path = models_dir / specs[name].file
    fix = f"rebuild it with `{rebuild_command(name)}`"
    if entry is None:
        raise PretrainedError(f"{name!r} has no entry in {models_dir / 'registry.json'}; {fix}")
    if not path.exists():
        raise PretrainedError(f"pretrained file {path} is missing; {fix}")
    digest = sha256(path)
    if digest != entry["sha256"]:
        raise PretrainedError(
            f"pretrained file {path} is corrupt: sha256 {digest} does not match the registry's {entry['sha256']}; {fix}")
    model = specs[name].build(entry["config"])
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval(), entry


def load_or_train(name: str, train: bool | None = None, device: str | None = None) -> torch.nn.Module:
    """Train ``name`` afresh (GPU present, or forced) or load its verified pretrained weights."""
    if should_train(train):
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        model, *_ = _specs()[name].train(device)
        return model.eval()
    return load(name)[0]


def pretrain(name: str, device: str = "cpu", models_dir: Path = MODELS_DIR) -> dict:
    """Train ``name``, write its weights to ``models_dir`` and record it in the registry."""
    spec = _specs()[name]
    t0 = time.perf_counter()
    model, config, training, metrics = spec.train(device)
    wall = time.perf_counter() - t0
    models_dir.mkdir(parents=True, exist_ok=True)
    path = models_dir / spec.file
    torch.save(model.state_dict(), path)
    registry = read_registry(models_dir / "registry.json")
    registry[name] = {
        "file": spec.file,
        "sha256": sha256(path),
        "command": rebuild_command(name) + (f" --device {device}" if device != "cpu" else ""),
        "config": config,
        "training": training,
        "metrics": metrics,
        "wall_time_s": round(wall, 1),
        "device": torch.cuda.get_device_name(0) if str(device).startswith("cuda") else f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)",
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
        "created": time.strftime("%Y-%m-%d"),
    }
    (models_dir / "registry.json").write_text(json.dumps(registry, indent=2, sort_keys=True) + "\n")
    return registry[name]
