"""The CG model: priors fitted by Boltzmann inversion, a SchNet-like network, force-matching training."""

from .network import CGModel, NetworkEnsemble, SchNetConfig, SchNetEnergy
from .priors import PriorEnergy, PriorFit, fit_priors
from .training import ForceMatchingSettings, train_cg_model, validation_mask

__all__ = ["CGModel", "NetworkEnsemble", "SchNetConfig", "SchNetEnergy", "PriorEnergy", "PriorFit", "fit_priors",
           "ForceMatchingSettings", "train_cg_model", "validation_mask"]
