"""The optimiser loop shared by every trainer (flows and CG models): validation, early stopping,
checkpoint/resume with atomic writes and safe loading."""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, is_dataclass

import numpy as np
import torch

from ..storage import array_sha256, atomic_torch_save


class CheckpointMismatch(ValueError):
    """A checkpoint was made by another configuration, other training settings or other data."""


def fingerprint(settings, model, *arrays) -> str:
    """JSON of what a training run is: its settings, the model's config and the sha256 of its data."""
    config = getattr(model, "config", None)
    return json.dumps({"settings": asdict(settings) if is_dataclass(settings) else repr(settings),
                       "model": type(model).__name__,
                       "config": asdict(config) if is_dataclass(config) else repr(config),
                       "data_sha256": [array_sha256(np.asarray(a, dtype=np.float32)) for a in arrays]}, sort_keys=True,
                      default=str)


def save_checkpoint(path: str, model, optimizer, generator: torch.Generator, step: int, history: dict,
                    best_state: dict | None = None, made_by: str = "") -> None:
    """Write model, optimiser, RNG, step, history (and the best weights so far) to ``path`` atomically,
    with the :func:`fingerprint` of the run that made it."""
    atomic_torch_save(path, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                             "generator": generator.get_state(), "step": step, "history": history,
                             "best_state": best_state, "made_by": made_by})


def load_checkpoint(path: str | None, model, optimizer, generator: torch.Generator, device, made_by: str = ""):
    """Restore a checkpoint if ``path`` exists; returns ``(step, history, best_state)`` (``(0, None, None)`` when starting).

    A checkpoint whose fingerprint differs from ``made_by`` (another configuration, other settings, other
    data) is refused, naming what differs.
    """
    if path is None or not os.path.exists(path):
        return 0, None, None
    state = torch.load(path, map_location=device, weights_only=True)
    saved = state.get("made_by", "")
    if made_by and saved != made_by:
        old, new = (json.loads(x) if x else {} for x in (saved, made_by))
        diff = sorted(_differences(old, new)) or ["a checkpoint without a fingerprint (older version)"]
        raise CheckpointMismatch(f"{path} was made by another run ({'; '.join(diff)}); delete it to start afresh "
                                 "or use another --checkpoint")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    generator.set_state(state["generator"])
    return state["step"], state["history"], state.get("best_state")


def _differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} in the checkpoint, {b!r} now")
    return out


def split_frames(positions, val_fraction: float, generator: torch.Generator):
    """Random (train, validation) split of frames; at least one validation frame."""
    positions = torch.as_tensor(positions, dtype=torch.float32)
    perm = torch.randperm(len(positions), generator=generator)
    n_val = max(1, int(val_fraction * len(positions)))
    return positions[perm[n_val:]], positions[perm[:n_val]]


def optimise(model, loss_fn, make_batch, val_batch, settings, generator: torch.Generator, device,
             checkpoint: str | None, desc: str, progress: bool, made_by: str = "") -> dict:
    """Adam on ``loss_fn(model, batch)`` with periodic validation, checkpoints and a progress bar.

    ``make_batch()`` draws a training batch; ``settings`` needs ``lr``, ``n_steps``, ``eval_every`` and
    ``checkpoint_every``, and may set ``patience``: then training stops after ``patience`` validations
    without improvement and the weights of the best validation loss are restored (early stopping), and
    ``lr_final``: the learning rate then follows :func:`cosine_lr` from ``lr`` down to it.
    Resumes from ``checkpoint`` when it exists and was made by the same run (``made_by``, a
    :func:`fingerprint`). A non-finite training or validation loss stops with an error (nothing is
    written). Returns the history ``{"step", "train_loss", "val_loss"}`` (with ``patience`` also
    ``best_step`` and ``stopped_early``).
    """
    from tqdm.auto import tqdm

    patience, lr_final = getattr(settings, "patience", None), getattr(settings, "lr_final", None)
    opt = torch.optim.Adam(model.parameters(), lr=settings.lr)
    step, history, best_state = load_checkpoint(checkpoint, model, opt, generator, device, made_by)
    history = history or {"step": [], "train_loss": [], "val_loss": []}
    if patience is not None:
        history.setdefault("best_step", 0)
        history.setdefault("stopped_early", False)
    end = step if history.get("stopped_early") else settings.n_steps
    bar = tqdm(range(step, end), initial=step, total=settings.n_steps, desc=desc, disable=not progress, mininterval=2.0)
    first, started = step, time.perf_counter()
    for step in bar:
        if lr_final is not None:
            for group in opt.param_groups:
                group["lr"] = cosine_lr(settings.lr, lr_final, step, settings.n_steps)
        loss = loss_fn(model, make_batch())
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{desc}: the training loss is {loss.item()} at step {step + 1}; check the data "
                                     "for non-finite or implausible values, or lower the learning rate")
        opt.zero_grad()
        loss.backward()
        opt.step()
        done = step + 1
        if progress and done - first == ESTIMATE_AFTER and end - done > ESTIMATE_AFTER:  # say early what is coming
            per_step = (time.perf_counter() - started) / ESTIMATE_AFTER
            tqdm.write(f"{desc}: {per_step * 1000:.0f} ms per step here, so about {_duration(per_step * (end - done))} "
                       f"for the remaining {end - done} steps")
        stop = False
        if done % settings.eval_every == 0 or done == settings.n_steps:
            with torch.no_grad():
                val_loss = loss_fn(model, val_batch).item()
            if not np.isfinite(val_loss):
                raise FloatingPointError(f"{desc}: the validation loss is {val_loss} at step {done}")
            history["step"].append(done)
            history["train_loss"].append(loss.item())
            history["val_loss"].append(val_loss)
            bar.set_postfix(train=f"{loss.item():.4g}", val=f"{val_loss:.4g}", refresh=False)
            if patience is not None:
                if best_state is None or val_loss < min(history["val_loss"][:-1], default=float("inf")):
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                    history["best_step"] = done
                stop = (done - history["best_step"]) >= patience * settings.eval_every
                history["stopped_early"] = stop
        if checkpoint is not None and (stop or done % settings.checkpoint_every == 0 or done == settings.n_steps):
            save_checkpoint(checkpoint, model, opt, generator, done, history, best_state, made_by)
        if stop:
            break
    bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    return history


def cosine_lr(lr: float, lr_final: float, step: int, n_steps: int) -> float:
    """The learning rate of step ``step`` (0-based) on a cosine from ``lr`` (step 0) to ``lr_final`` (step
    ``n_steps``): lr_final + (lr − lr_final)·(1 + cos(π·step/n_steps))/2."""
    return float(lr_final + 0.5 * (lr - lr_final) * (1 + math.cos(math.pi * min(step, n_steps) / n_steps)))


#: Steps timed before :func:`optimise` prints its estimate of the whole run.
ESTIMATE_AFTER = 20


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def train_on_frames(positions, settings, build_model, batch_fn, loss_fn, device, checkpoint: str | None, desc: str,
                    progress: bool):
    """The flows' common trainer: seeded train/validation split of frames, a fixed validation batch,
    seeded initialisation, then :func:`optimise`. Returns ``(model in eval mode, history)``.

    ``batch_fn(frames, settings, generator, device)`` turns clean frames into a batch for
    ``loss_fn(model, batch)``; ``settings`` also needs ``seed``, ``val_fraction`` and ``batch_size``.
    """
    positions = np.asarray(positions, dtype=np.float32)
    if not np.isfinite(positions).all():
        raise ValueError(f"{desc}: {int((~np.isfinite(positions)).any(axis=(1, 2)).sum())} frames have non-finite "
                         "positions; remove them first")
    gen = torch.Generator().manual_seed(settings.seed)
    train, val = split_frames(positions, settings.val_fraction, gen)
    val_batch = batch_fn(val[:2048], settings, torch.Generator().manual_seed(settings.seed + 1), device)
    torch.manual_seed(settings.seed)  # deterministic initialisation
    model = build_model().to(device)

    def make_batch():
        return batch_fn(train[torch.randint(len(train), (settings.batch_size,), generator=gen)], settings, gen, device)

    history = optimise(model, loss_fn, make_batch, val_batch, settings, gen, device, checkpoint, desc, progress,
                       made_by=fingerprint(settings, model, positions))
    return model.eval(), history
