"""Checkpoint/resume shared by the flow trainers (atomic writes, safe loading)."""

from __future__ import annotations

import os

import torch


def save_checkpoint(path: str, model, optimizer, generator: torch.Generator, step: int, history: dict) -> None:
    """Write model, optimiser, RNG, step and history to ``path`` atomically (tmp file, then rename)."""
    tmp = path + ".tmp"
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "generator": generator.get_state(),
                "step": step, "history": history}, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | None, model, optimizer, generator: torch.Generator, device) -> tuple[int, dict | None]:
    """Restore a checkpoint if ``path`` exists; returns ``(step, history)`` (``(0, None)`` when starting)."""
    if path is None or not os.path.exists(path):
        return 0, None
    state = torch.load(path, map_location=device, weights_only=True)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    generator.set_state(state["generator"])
    return state["step"], state["history"]


def split_frames(positions, val_fraction: float, generator: torch.Generator):
    """Random (train, validation) split of frames; at least one validation frame."""
    positions = torch.as_tensor(positions, dtype=torch.float32)
    perm = torch.randperm(len(positions), generator=generator)
    n_val = max(1, int(val_fraction * len(positions)))
    return positions[perm[n_val:]], positions[perm[:n_val]]


def optimise(model, loss_fn, make_batch, val_batch, settings, generator: torch.Generator, device,
             checkpoint: str | None, desc: str, progress: bool) -> dict:
    """Adam on ``loss_fn(model, batch)`` with periodic validation, checkpoints and a progress bar.

    ``make_batch()`` draws a training batch; ``settings`` needs ``lr``, ``n_steps``, ``eval_every`` and
    ``checkpoint_every``. Resumes from ``checkpoint`` when it exists. Returns the history
    ``{"step", "train_loss", "val_loss"}``.
    """
    from tqdm.auto import tqdm

    opt = torch.optim.Adam(model.parameters(), lr=settings.lr)
    step, history = load_checkpoint(checkpoint, model, opt, generator, device)
    history = history or {"step": [], "train_loss": [], "val_loss": []}
    bar = tqdm(range(step, settings.n_steps), initial=step, total=settings.n_steps, desc=desc, disable=not progress,
               mininterval=2.0)
    for step in bar:
        loss = loss_fn(model, make_batch())
        opt.zero_grad()
        loss.backward()
        opt.step()
        done = step + 1
        if done % settings.eval_every == 0 or done == settings.n_steps:
            with torch.no_grad():
                val_loss = loss_fn(model, val_batch).item()
            history["step"].append(done)
            history["train_loss"].append(loss.item())
            history["val_loss"].append(val_loss)
            bar.set_postfix(train=f"{loss.item():.4g}", val=f"{val_loss:.4g}", refresh=False)
        if checkpoint is not None and (done % settings.checkpoint_every == 0 or done == settings.n_steps):
            save_checkpoint(checkpoint, model, opt, generator, done, history)
    return history
