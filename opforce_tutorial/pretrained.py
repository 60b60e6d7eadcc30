"""Pretrained weights: a registry in ``models/`` and the train-or-load policy.

``models/registry.json`` records, for every pretrained model: its file, sha256, the model config,
the training settings, the exact command that produced it, the metrics it reached, the machine, the
wall time and the package versions. ``models/replicates.json`` records the metrics of the same
training repeated with other seeds (:func:`replicate`, ``opforce replicate``): one trained model is one
draw, and its replicates say how far another draw would land. :func:`pretrain` writes file and entry; :func:`load_or_train`
trains when a GPU is present and loads otherwise. Override with ``train=True/False`` or the
environment variable ``OPFORCE_TRAIN`` (``always``/``1`` or ``never``/``0``; ``auto`` is the default).
Files load with ``torch.load(..., weights_only=True)`` after their checksum is verified.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import time
from pathlib import Path
import torch

from . import catalog
from .catalog import ModelSpec
from .storage import RunClock, atomic_torch_save, atomic_write, read_json, register, sha256, update_json, verified

MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
REGISTRY = MODELS_DIR / "registry.json"
REPLICATES = "replicates.json"
#: Results of :func:`record_long_run` (``opforce long-run``), next to the registry.
LONG_RUNS = "long_runs.json"
#: A run's seconds per invocation (:class:`~opforce_tutorial.storage.RunClock`), in its work folder: a run
#: resumed from ``models/in_progress/`` records the time of every invocation, not only of the last.
WALL_TIME = "wall_time.json"
ENV_VAR = "OPFORCE_TRAIN"


class PretrainedError(RuntimeError):
    """A pretrained file is missing, corrupt or unknown; the message says how to rebuild it."""


def _specs() -> dict[str, ModelSpec]:
    return catalog.specs()


def rebuild_command(name: str) -> str:
    return f"opforce pretrain {name}"


def read_registry(path: Path = REGISTRY) -> dict:
    """A registry (or results file next to it) as a dict; ``{}`` if absent, an error naming it if corrupt."""
    return read_json(path, "restore it with `git checkout -- " + str(path) + "`") if path.exists() else {}


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
    fix = f"rebuild it with `{rebuild_command(name)}`"
    if entry is None:
        raise PretrainedError(f"{name!r} has no entry in {models_dir / 'registry.json'}; {fix}")
    _refuse_other_settings(name, entry, fix)
    path = _verified(models_dir / specs[name].file, entry["sha256"], fix)
    model = specs[name].build(entry["config"])
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval(), entry


def settings_changes(name: str, entry: dict) -> list[str]:
    """Where a registry entry's recorded ``training`` differs from what its recipe records now, one
    ``"key.subkey: recorded → recipe"`` per difference (a key one side lacks reads ``absent``); ``[]`` when they
    agree or the recipe publishes no settings (:attr:`ModelSpec.settings`)."""
    spec = _specs().get(name)
    if spec is None or spec.settings is None:
        return []
    return _differences(entry.get("training", {}), json.loads(json.dumps(spec.settings())))


def _differences(recorded: dict, wanted: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(recorded) | set(wanted)):
        a, b = recorded.get(key, _ABSENT), wanted.get(key, _ABSENT)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {_shown(a)} → {_shown(b)}")
    return out


_ABSENT = object()  # a key one side of the comparison lacks


def _shown(value) -> str:
    return "absent" if value is _ABSENT else str(value)


def models_with_other_settings(registry: dict | None = None) -> list[str]:
    """The registered models whose recorded training settings are not their recipe's (:func:`settings_changes`):
    what ``opforce pretrain`` should rebuild after a recipe changed."""
    registry = read_registry() if registry is None else registry
    return sorted(name for name, entry in registry.items() if settings_changes(name, entry))


def _refuse_other_settings(name: str, entry: dict, fix: str) -> None:
    changes = settings_changes(name, entry)
    if changes:
        shown = "; ".join(changes[:3]) + (f"; and {len(changes) - 3} more" if len(changes) > 3 else "")
        raise PretrainedError(f"{name} was trained with other settings than its recipe's ({shown}); {fix}")


def load_kernel(name: str, kbt: float, device: str = "cpu", models_dir: Path = MODELS_DIR, **kernel_options):
    """The reverse-noise kernel of the registered flow ``name`` (e.g. ``ala2-coupling-0.05``), with the noise
    widths it was trained with; returns ``(kernel, registry entry)``. Options as for
    :func:`~opforce_tutorial.kernels.files.kernel_from_file`."""
    from .kernels.files import flow_kind, reverse_kernel

    model, entry = load(name, models_dir)
    try:
        flow_kind(model)
    except TypeError:
        raise PretrainedError(f"{name!r} is not a flow: a kernel comes from a registered coupling flow or CNF "
                              "(`opforce models` lists them)") from None
    return reverse_kernel(model, entry["training"], kbt, device, **kernel_options), entry


_TRAINED: dict[str, tuple] = {}  # models trained in this process: name -> (model, samples)


def _verified(path: Path, expected: str, fix: str) -> Path:
    return verified(path, expected, "pretrained file", fix, PretrainedError)


def load_samples(name: str, models_dir: Path = MODELS_DIR):
    """The samples saved with a registered model (e.g. a CG model's trajectory), verified by sha256."""
    import numpy as np

    entry = read_registry(models_dir / "registry.json").get(name)
    fix = f"rebuild it with `{rebuild_command(name)}`"
    if entry is None or "samples" not in entry:
        raise PretrainedError(f"{name!r} has no saved samples in {models_dir / 'registry.json'}; {fix}")
    _refuse_other_settings(name, entry, fix)
    return np.load(_verified(models_dir / entry["samples"]["file"], entry["samples"]["sha256"], fix))["samples"]


def load_or_train(name: str, train: bool | None = None, device: str | None = None) -> torch.nn.Module:
    """Train ``name`` afresh (GPU present, or forced) or load its verified pretrained weights.

    A model trained in this process is kept, so a model that needs another (a CG model needs its kernel)
    does not train that one twice.
    """
    if should_train(train):
        if name not in _TRAINED:
            device = device or ("cuda" if torch.cuda.is_available() else "cpu")
            model, _, _, _, samples = _specs()[name].train(device, None)
            _TRAINED[name] = (model.eval(), samples)
        return _TRAINED[name][0]
    return load(name)[0]


def samples(name: str, train: bool | None = None, device: str | None = None):
    """The samples of ``name``: from this process's training when it trains, else the saved, verified ones."""
    if should_train(train):
        load_or_train(name, True, device)
        return _TRAINED[name][1]
    return load_samples(name)


def pretrain(name: str, device: str = "cpu", models_dir: Path = MODELS_DIR) -> dict:
    """Train ``name``, write its weights to ``models_dir`` and record it in the registry.

    The trained model is also kept for this process (as :func:`load_or_train` keeps one), so that
    ``opforce pretrain ala2-cnf-0.05 ala2-cg-cnf-0.05`` labels the CG model's data with the very flow it
    has just saved, also where :func:`should_train` would train that flow afresh (a GPU).
    """
    spec = _specs()[name]
    work = work_dir(models_dir, name)
    with RunClock(work / WALL_TIME) as clock:
        model, config, training, metrics, produced = spec.train(device, work)
    _TRAINED[name] = (model.eval(), produced)
    models_dir.mkdir(parents=True, exist_ok=True)
    path = models_dir / spec.file
    atomic_torch_save(path, model.state_dict())
    extra = {}
    if produced is not None:
        import numpy as np

        samples_path = path.with_name(path.stem + "_samples.npz")
        atomic_write(samples_path, lambda f: np.savez_compressed(f, samples=produced))
        extra["samples"] = {"file": samples_path.name, "sha256": sha256(samples_path), "shape": list(produced.shape)}
    entry = {
        **extra,
        "file": spec.file,
        "sha256": sha256(path),
        "command": rebuild_command(name) + (f" --device {device}" if device != "cpu" else ""),
        "config": config,
        "training": training,
        "metrics": metrics,
        **clock.record(),
        "device": device_name(device),
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
        "created": time.strftime("%Y-%m-%d"),
    }
    # several `opforce pretrain` processes may finish at once: one locked, atomic read-modify-write
    register(models_dir / "registry.json", {name: entry})
    shutil.rmtree(work, ignore_errors=True)
    return entry


def work_dir(models_dir: Path, name: str) -> Path:
    """``models/.work/<name>/``: checkpoints and labels of a run in progress (`opforce pretrain` and
    `opforce replicate` resume from it after a kill; each stage refuses state of another configuration).
    Removed when the run has finished."""
    path = models_dir / ".work" / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def replicate_command(name: str, seed: int) -> str:
    return f"opforce replicate {name} --seeds {seed}"


def read_replicates(models_dir: Path = MODELS_DIR) -> dict:
    """``{model name: {seed (str): entry}}`` of every recorded replicate."""
    return read_registry(models_dir / REPLICATES)


def replicates_of(registry: dict, replicates: dict) -> dict:
    """The replicates recorded for the weights in ``registry`` (a retraining leaves older ones behind)."""
    return {name: {seed: r for seed, r in runs.items() if r["model_sha256"] == registry.get(name, {}).get("sha256")}
            for name, runs in replicates.items()}


def current_replicates(models_dir: Path = MODELS_DIR) -> dict:
    """:func:`replicates_of` the registered models in ``models_dir``."""
    return replicates_of(read_registry(models_dir / "registry.json"), read_replicates(models_dir))


def metrics_by_seed(names: list[str], registry: dict | None = None, replicates: dict | None = None) -> dict:
    """``{name: {seed: metrics}}`` of the registered models ``names`` that are in ``registry``: seed 0 the registered
    model, other seeds its replicates recorded for the same weights (:func:`replicates_of`), in seed order."""
    registry = read_registry() if registry is None else registry
    replicates = replicates_of(registry, read_replicates() if replicates is None else replicates)
    return {name: dict(sorted(({0: registry[name]["metrics"]}
                               | {int(seed): r["metrics"] for seed, r in replicates.get(name, {}).items()}).items()))
            for name in names if name in registry}


def replicate(name: str, seed: int, device: str = "cpu", models_dir: Path = MODELS_DIR) -> dict:
    """Repeat the training of ``name`` with ``seed`` and record its metrics (not its weights).

    Seed 0 is the registered model itself. The entry records the sha256 of the registered weights the
    replicate belongs to, so a replicate of an older model is recognisable after a retraining.
    """
    spec = _specs().get(name)
    if spec is None or spec.replicate is None:
        replicable = sorted(n for n, s in _specs().items() if s.replicate is not None)
        raise PretrainedError(f"{name!r} has no replicate training; models that have one: {replicable}")
    if seed == 0:
        raise ValueError(f"seed 0 is the registered model itself; replicate {name!r} with seeds 1, 2, ...")
    registered = read_registry(models_dir / "registry.json").get(name)
    if registered is None:
        raise PretrainedError(f"{name!r} has no entry in {models_dir / 'registry.json'}; "
                              f"train it first with `{rebuild_command(name)}`")
    work = work_dir(models_dir, f"{name}-seed{seed}")
    with RunClock(work / WALL_TIME) as clock:
        metrics = spec.replicate(seed, device, work)
    entry = {"metrics": metrics, "model_sha256": registered["sha256"], **clock.record(),
             "command": replicate_command(name, seed) + (f" --device {device}" if device != "cpu" else ""),
             "device": device_name(device), "created": time.strftime("%Y-%m-%d")}
    record_entry(models_dir / REPLICATES, name, str(seed), entry)
    shutil.rmtree(work, ignore_errors=True)
    return entry


def record_long_run(name: str, ns: float = 1.0, device: str = "cpu", models_dir: Path = MODELS_DIR) -> dict:
    """Simulate the registered model ``name`` (weights verified by sha256) for ``ns`` per replica with its
    recipe's long run, and record the result in ``models/long_runs.json`` under its name and length with
    the sha256 of the weights, the command, the device and the wall time. Resumes a killed run."""
    spec = _specs().get(name)
    if spec is None or spec.long_run is None:
        runnable = sorted(n for n, s in _specs().items() if s.long_run is not None)
        raise PretrainedError(f"{name!r} has no long run; models that have one: {runnable}")
    model, registered = load(name, models_dir)
    work = work_dir(models_dir, f"long-run-{name}-{ns:g}ns")
    with RunClock(work / WALL_TIME) as clock:
        result = spec.long_run(model, ns, device, str(work / "simulation.ckpt"))
    entry = {**result, "ns_per_replica": ns, "model_sha256": registered["sha256"],
             **clock.record(), "device": device_name(device),
             "command": f"opforce long-run {name} --ns {ns:g}" + (f" --device {device}" if device != "cpu" else ""),
             "created": time.strftime("%Y-%m-%d")}
    record_entry(models_dir / LONG_RUNS, name, f"{ns:g}", entry)
    shutil.rmtree(work, ignore_errors=True)
    return entry


def long_runs(models_dir: Path = MODELS_DIR, registry: dict | None = None) -> dict:
    """``{model name: {ns: entry}}`` of the recorded long runs that belong to the registered weights (a
    retrained model leaves its older long runs out; ``registry``: the models registry, if already read)."""
    registry = read_registry(models_dir / "registry.json") if registry is None else registry
    current = replicates_of(registry, read_registry(models_dir / LONG_RUNS))
    return {name: runs for name, runs in current.items() if runs}


def record_entry(path: Path, name: str, key: str, entry: dict) -> None:
    """Set ``{name: {key: entry}}`` in the JSON file ``path`` (a results file next to the registry, such
    as replicates.json), under the registry's lock so that parallel commands do not lose entries."""
    update_json(path, lambda results: results.setdefault(name, {}).__setitem__(key, entry))


def device_name(device) -> str:
    if str(device).startswith("cuda"):
        return torch.cuda.get_device_name(0)
    return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
