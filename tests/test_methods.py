"""The method table end to end on tiny random diffusers UNets, pinned outputs, and what each row honours."""
import pytest
import torch
from diffusers import UNet2DModel

from shiftsr.denoisers import PredictionDenoiser, ddpm_index
from shiftsr.methods import METHODS, family_of, method_row, methods_for
from shiftsr.processes import DomainShiftProcess, ResShiftProcess, VPProcess, start_state
from shiftsr.samplers import randn_like

PROCESSES = {
    "dossr": lambda: DomainShiftProcess(),
    "resshift": lambda: ResShiftProcess(num_steps=4, variant="official", min_noise_level=0.2),
    "sr3": lambda: VPProcess(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012),
    "prior": lambda: VPProcess(beta_schedule="linear"),
}
START = {"dossr": lambda p: p.t1, "resshift": lambda p: p.t_max, "sr3": lambda p: p.t_max, "prior": lambda p: 400.0}
CASES = [(family, name) for family in PROCESSES for name in methods_for(family)]


def tiny_unet(in_channels: int) -> UNet2DModel:
    torch.manual_seed(0)
    return UNet2DModel(sample_size=16, in_channels=in_channels, out_channels=3, block_out_channels=(8, 16),
                       layers_per_block=1, norm_num_groups=4, down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D")).eval()


def run(family, name, *, seed=0, batch=1):
    """One method from its family's start, as the pipeline runs it (start_state, the row's grid and sampler)."""
    process, row = PROCESSES[family](), METHODS[name]
    conditional = family != "prior"
    unet = tiny_unet(6 if conditional else 3)

    def net(x, t, cond):
        return unet(x if cond is None else torch.cat([x, cond], 1), ddpm_index(t)).sample

    # a domain-shift model cannot predict epsilon at t1 (a = 0): it predicts x0 there, as ours do
    denoiser = PredictionDenoiser(net, process=process, prediction_type="sample" if family != "prior" else "epsilon")
    xh = torch.linspace(-0.8, 0.8, 3 * 16 * 16).reshape(1, 3, 16, 16).repeat(batch, 1, 1, 1)
    generators = [torch.Generator().manual_seed(seed) for _ in range(batch)]
    y = xh if conditional else None
    ts = row.grid(process, 4, START[family](process))
    estimate = None if family == "sr3" else xh
    x = start_state(process, estimate, y, ts[0], randn_like(xh, generators))
    return row.sample(denoiser, x, ts, process=process, y=y, cond=y, order=3 if row.uses_order else None,
                      generator=generators, callback=None)


@pytest.mark.parametrize("family,name", CASES, ids=[f"{f}-{m}" for f, m in CASES])
def test_every_method_runs_and_depends_on_the_seed_only(family, name):
    out = run(family, name)
    assert out.shape == (1, 3, 16, 16) and torch.isfinite(out).all()
    assert torch.equal(out, run(family, name))
    # every sampler's output depends on its starting noise (ODEs too: they carry it to the end)
    assert not torch.allclose(out, run(family, name, seed=1))
    batch = run(family, name, batch=2)
    assert torch.allclose(batch[0], out[0], atol=1e-5) and torch.allclose(batch[1], out[0], atol=1e-5)


PINNED = {  # out[0, :, 5, 7] of run(family, method), recorded with torch 2.13 on the CPU
    ("dossr", "dossr"): [-0.0466, -0.1538, 0.3265],
    ("dossr", "dossr-ode"): [-0.26, -0.2599, -0.1046],
    ("dossr", "dpmpp-2m"): [-0.2822, -0.2704, -0.0778],
    ("resshift", "resshift"): [0.2318, -0.0772, 0.2507],
    ("resshift", "resshift-ode"): [-0.1948, 0.2383, -0.0665],
    ("prior", "noise-injection"): [-0.5167, 1.9548, 0.8697],
}


@pytest.mark.parametrize("family,name", list(PINNED), ids=[f"{f}-{m}" for f, m in PINNED])
def test_pinned_outputs(family, name):
    got = run(family, name)[0, :, 5, 7]
    assert torch.allclose(got, torch.tensor(PINNED[family, name]), atol=2e-4)


def test_families_and_their_methods():
    assert family_of(PROCESSES["dossr"](), conditional=True) == "dossr"
    assert family_of(PROCESSES["resshift"](), conditional=True) == "resshift"
    assert family_of(VPProcess(), conditional=True) == "sr3" and family_of(VPProcess(), conditional=False) == "prior"
    assert methods_for("dossr") == ("dossr", "dossr-ode", "dpmpp-2m", "dossr-no-dosg")
    assert methods_for("sr3") == ("ddim", "ddpm", "dpmpp-2m", "dossr-no-dosg")
    assert methods_for("prior") == ("noise-injection",)
    assert methods_for("regressor") == ("regression",)  # a bundle without diffusion network (realesrgan-x4plus)
    # every name is in the table once, and every row runs on at least one family
    assert sorted({n for f in [*PROCESSES, "regressor"] for n in methods_for(f)}) == sorted(METHODS)


def test_unknown_method_and_an_order_a_method_cannot_honour_are_errors():
    with pytest.raises(ValueError, match="allowed: dossr, dossr-ode, dpmpp-2m, dossr-no-dosg"):
        method_row("resshift", "dossr")
    with pytest.raises(ValueError, match="order: method 'resshift' has no solver order"):
        METHODS["resshift"].check(order=2)
    METHODS["dossr"].check(order=2)


def test_sr3_starts_from_pure_noise_and_an_oracle_x0_comes_back():
    """SR3-style sampling: x_T ~ N(0, I) at T; an oracle x0-denoiser gives back x0 exactly with every sr3 method."""
    process = PROCESSES["sr3"]()
    x0, xh = torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8)
    for name in methods_for("sr3"):
        starts = []

        def oracle(x, t, cond):
            starts.append(x)
            assert cond is xh
            return x0

        row = METHODS[name]
        ts = row.grid(process, 4, process.t_max)
        eps = randn_like(xh, torch.Generator().manual_seed(0))
        out = row.sample(oracle, start_state(process, None, xh, ts[0], eps), ts, process=process, y=xh, cond=xh,
                         order=1 if row.uses_order else None, generator=torch.Generator().manual_seed(1),
                         callback=None)
        torch.testing.assert_close(out, x0)
        torch.testing.assert_close(starts[0], torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(0)))


def test_the_readme_shows_the_method_table():
    from pathlib import Path

    from shiftsr.methods import markdown_table

    assert markdown_table() in (Path(__file__).resolve().parents[1] / "README.md").read_text()
