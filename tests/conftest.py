import pytest
import torch

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request):
    """Every device test runs on the CPU, and on CUDA when present (as bgflow's fixtures do)."""
    return torch.device(request.param)


@pytest.fixture(scope="session")
def system():
    from opforce_tutorial.systems import DoubleWellBond

    return DoubleWellBond()


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(1234)
