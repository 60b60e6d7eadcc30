import pytest
import torch

# The models under test are tiny: one intra-op thread is faster than two fighting for the cores.
torch.set_num_threads(1)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request):
    """Every device test runs on the CPU, and on CUDA when present (as bgflow's fixtures do)."""
    return torch.device(request.param)


@pytest.fixture(params=[torch.float32, torch.float64], ids=["float32", "float64"])
def dtype(request):
    """Maths tests run in single and double precision (as bgflow's ``ctx`` fixtures do)."""
    return request.param


#: Agreement expected of two routes to the same number, by precision.
TOLERANCE = {torch.float32: 1e-4, torch.float64: 1e-9}


@pytest.fixture(scope="session")
def system():
    from opforce_tutorial.systems import DoubleWellBond

    return DoubleWellBond()


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(1234)
