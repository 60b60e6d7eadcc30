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
