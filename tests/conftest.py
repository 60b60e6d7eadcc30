import pytest
import torch

# The models under test are tiny: one intra-op thread is faster than two fighting for the cores.
torch.set_num_threads(1)

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
