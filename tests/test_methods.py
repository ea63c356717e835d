"""Every method end to end on tiny random diffusers UNets, and pinned outputs."""
import pytest
import torch
from diffusers import UNet2DModel

from shiftsr.denoisers import UNet2DDenoiser
from shiftsr.methods import METHODS, run_method
from shiftsr.processes import DomainShiftProcess, ResShiftProcess, VPProcess

PROCESSES = {
    DomainShiftProcess: lambda: DomainShiftProcess(),
    ResShiftProcess: lambda: ResShiftProcess(num_steps=4, variant="official", min_noise_level=0.2),
    VPProcess: lambda: VPProcess(beta_schedule="linear"),
}
CASES = [(kind, method) for kind, methods in METHODS.items() for method in methods]


def tiny_unet(in_channels: int) -> UNet2DModel:
    torch.manual_seed(0)
    return UNet2DModel(sample_size=16, in_channels=in_channels, out_channels=3, block_out_channels=(8, 16),
                       layers_per_block=1, norm_num_groups=4, down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D")).eval()


def run(kind, method, *, seed=0, batch=1):
    process = PROCESSES[kind]()
    conditional = kind is not VPProcess
    # a domain-shift model cannot predict epsilon at t1 (a = 0): it predicts x0 there, as ours do
    prediction = "epsilon" if kind is VPProcess else "sample"
    denoiser = UNet2DDenoiser(tiny_unet(6 if conditional else 3), process=process, prediction_type=prediction,
                              concat_cond=conditional)
    xh = torch.linspace(-0.8, 0.8, 3 * 16 * 16).reshape(1, 3, 16, 16).repeat(batch, 1, 1, 1)
    generators = [torch.Generator().manual_seed(seed) for _ in range(batch)]
    wrapped = denoiser if conditional else (lambda x, t, cond: denoiser(x, t, None))
    return run_method(method, wrapped, xh, process=process, steps=4, order=3, scale=4, generator=generators)


@pytest.mark.parametrize("kind,method", CASES, ids=[m for _, m in CASES])
def test_every_method_runs_and_depends_on_the_seed_only(kind, method):
    out = run(kind, method)
    assert out.shape == (1, 3, 16, 16) and torch.isfinite(out).all()
    assert torch.equal(out, run(kind, method))
    # every sampler's output depends on its starting noise (ODEs too: they carry it to the end)
    assert not torch.allclose(out, run(kind, method, seed=1))
    batch = run(kind, method, batch=2)
    assert torch.allclose(batch[0], out[0], atol=1e-5) and torch.allclose(batch[1], out[0], atol=1e-5)


PINNED = {  # out[0, :, 5, 7] of run(kind, method), computed once with torch 2.13 on the CPU
    'dossr' : [-0.0466, -0.1538, 0.3265],
    'dossr-ode' : [-0.26, -0.2599, -0.1046],
    'dpmpp-2m' : [-0.2822, -0.2704, -0.0778],
    'resshift' : [0.2318, -0.0772, 0.2507],
    'resshift-ode' : [-0.1948, 0.2383, -0.0665],
    'noise-injection' : [-0.5167, 1.9548, 0.8697],
}


@pytest.mark.parametrize("kind,method", CASES, ids=[m for _, m in CASES])
def test_pinned_outputs(kind, method):
    got = run(kind, method)[0, :, 5, 7]
    assert torch.allclose(got, torch.tensor(PINNED[method]), atol=2e-4)


def test_unknown_method_lists_the_allowed_ones():
    with pytest.raises(ValueError, match="allowed: dossr, dossr-ode, dpmpp-2m"):
        run(DomainShiftProcess, "resshift")


def test_conditional_vp_methods_start_from_pure_noise_and_return_an_oracle_x0():
    """SR3-style sampling: x_T ~ N(0, I) at T; an oracle x0-denoiser gives back x0 exactly (ddim, ddpm, dpmpp-2m)."""
    from shiftsr.methods import methods_for, run_method
    from shiftsr.processes import VPProcess

    process = VPProcess(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    x0, xh = torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8)
    assert methods_for(process) == ("noise-injection",)
    starts = []

    def oracle(x, t, cond):
        if not starts:
            starts.append(x)
        assert cond is xh
        return x0

    for method in methods_for(process, conditional=True):
        starts.clear()
        out = run_method(method, oracle, xh, process=process, steps=4, order=1, scale=4,
                         generator=torch.Generator().manual_seed(0), conditional=True)
        torch.testing.assert_close(out, x0)
        torch.testing.assert_close(starts[0], torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(0)))
