"""Shared fixtures: a tiny random x4 model folder that loads in well under a second."""
import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module (pytestmark = pytest.mark.usefixtures("one_thread")): the official recordings
    ran on one thread, and more reorder float32 sums (1e-6 on a network output, times s / a = 156 at ADM's t = 1000);
    tiny networks gain nothing from threads, and on a busy 2-core machine they wait for each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A model folder: ShiftNet (8 channels, 1 block, random output layer), DoSSR process, x4, space-to-depth 4."""
    from shiftsr.bundle import save_bundle, settings_for
    from shiftsr.networks import ShiftNet
    from shiftsr.processes import DomainShiftProcess

    torch.manual_seed(0)
    net = ShiftNet(channels=8, num_blocks=1)
    torch.nn.init.normal_(net.conv_out.weight, std=0.05)  # zero-initialised, it would ignore noise and tiling
    process = DomainShiftProcess()
    return save_bundle(tmp_path_factory.mktemp("tiny_model"), net, settings_for(net, process, scale=4))
