"""Label sources: kernels κ(y|x) with ``sample_with_forces(x) -> (y, forces)``."""

from .base import Kernel, keep_finite, remove_mean
from .flow1d import NoiseConditionalFlow1D, train_flow1d
from .noise import NoiseKernel
from .reverse import ReverseNoiseKernel

__all__ = [
    "Kernel",
    "NoiseKernel",
    "ReverseNoiseKernel",
    "NoiseConditionalFlow1D",
    "train_flow1d",
    "keep_finite",
    "remove_mean",
]
