"""Forward processes against the papers' formulas, written out here independently of the library."""
import math

import pytest
import torch

from shiftsr.processes import (PROCESSES, DomainShiftProcess, ResShiftProcess, VPProcess, build_process, make_betas,
                               process_config)

F64 = torch.float64
INT_TIMES = torch.tensor([0, 1, 2, 50, 249, 250, 499, 500, 501, 777, 999, 1000], dtype=F64)


def close(actual, expected, rtol=1e-10, atol=1e-12):
    torch.testing.assert_close(torch.as_tensor(actual, dtype=F64), torch.as_tensor(expected, dtype=F64),
                               rtol=rtol, atol=atol)


def abar_table(betas):
    """abar at process times 0..T: 1 at the clean state, prod_{i <= t} (1 - beta_i) at time t (Ho et al. Eq. 4)."""
    out = [1.0]
    for beta in betas.tolist():
        out.append(out[-1] * (1 - beta))
    return torch.tensor(out, dtype=F64)


# VP schedules

def test_vp_linear_betas_and_coefficients():
    """Ho et al. 2020: beta linear from 1e-4 to 0.02 over T = 1000; a = sqrt(abar), b = 0, s = sqrt(1 - abar)."""
    betas = torch.tensor([1e-4 + (0.02 - 1e-4) * i / 999 for i in range(1000)], dtype=F64)
    close(make_betas("linear"), betas)
    abar = abar_table(betas)
    a, b, s = VPProcess().coefficients(INT_TIMES)
    close(a, abar[INT_TIMES.long()].sqrt())
    close(b, torch.zeros_like(b))
    close(s, (1 - abar[INT_TIMES.long()]).sqrt())


def test_vp_cosine_schedule_is_nichol_dhariwal_eq_17():
    """abar_t = f(t) / f(0), f(t) = cos((t/T + 0.008) / 1.008 * pi/2)^2, betas clipped at 0.999."""
    f = [math.cos((t / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2 for t in range(1001)]
    process = VPProcess(beta_schedule="cosine")
    close(process.alphas_cumprod(torch.arange(1000, dtype=F64)), [f[t] / f[0] for t in range(1000)], rtol=1e-9)
    close(make_betas("cosine")[-1], 0.999)  # f(T) = 0 would make beta_T = 1: the clip keeps abar_T > 0
    close(process.alphas_cumprod(1000.0), f[999] / f[0] * 0.001, rtol=1e-9)


def test_sd_scaled_linear_betas():
    """Stable Diffusion: sqrt(beta) linear from sqrt(0.00085) to sqrt(0.012) over T = 1000."""
    betas = make_betas("scaled_linear", beta_start=0.00085, beta_end=0.012)
    close(betas[0], 0.00085)
    close(betas[-1], 0.012)
    close(betas[500], (0.00085**0.5 + (0.012**0.5 - 0.00085**0.5) * 500 / 999) ** 2)


def test_vp_between_integer_times_is_log_linear():
    process = VPProcess()
    close(process.alphas_cumprod(300.5), (process.alphas_cumprod(300.0) * process.alphas_cumprod(301.0)).sqrt())


# DoSSR

def sd_abar():
    betas = torch.tensor([(0.00085**0.5 + (0.012**0.5 - 0.00085**0.5) * i / 999) ** 2 for i in range(1000)],
                         dtype=F64)
    return abar_table(betas)


def test_dossr_paper_coefficients():
    """DoSSR Eq. 2, 4: a = sqrt(abar)(1 - eta), b = sqrt(abar) eta, s = sqrt(1 - abar), eta = (1 - cos(pi t/t1)) / 2."""
    abar = sd_abar()[INT_TIMES.long()]
    eta = torch.tensor([(1 - math.cos(math.pi * t / 500)) / 2 if t < 500 else 1.0 for t in INT_TIMES.tolist()],
                       dtype=F64)
    process = DomainShiftProcess()
    close(process.shift(INT_TIMES), eta)
    a, b, s = process.coefficients(INT_TIMES)
    close(a, abar.sqrt() * (1 - eta))
    close(b, abar.sqrt() * eta)
    close(s, (1 - abar).sqrt())
    close(process.shift(torch.tensor([0.0, 125.0, 250.0, 500.0, 812.3], dtype=F64)),
          [0.0, (1 - 0.5**0.5) / 2, 0.5, 1.0, 1.0])
    assert process.t1 == 500 and process.t_max == 1000


def test_dossr_official_eta_table():
    """Official code: eta[:500] = (1 - cos(pi linspace(0.001, 0.999, 500))) / 2 at indices 0..499 (times 1..500)."""
    process = DomainShiftProcess(eta="official")
    table = [0.0] + [(1 - math.cos(math.pi * (0.001 + 0.998 * i / 499))) / 2 for i in range(500)] + [1.0] * 500
    close(process.shift(INT_TIMES), [table[int(t)] for t in INT_TIMES.tolist()])
    eta_500 = float(process.shift(500.0))
    assert eta_500 == pytest.approx(0.9999975, abs=1e-7) and eta_500 < 1
    assert float(process.shift(1.0)) == pytest.approx(2.467e-6, rel=1e-3)
    # so the noise level l = s / (sqrt(abar)(1 - eta)) is finite there, about 6.5e5
    abar_500 = sd_abar()[500]
    level = float(noise_level(process, 500.0))
    close(level, (1 - abar_500).sqrt() / (abar_500.sqrt() * (1 - eta_500)))
    assert 6.3e5 < level < 6.7e5
    assert math.isinf(float(noise_level(DomainShiftProcess(), 500.0)))


def noise_level(process, t):
    """l = s / a of the VE variable u = (x - b y) / a = x0 + l eps, the level the DoSSR solvers step in."""
    a, _, s = process.coefficients(torch.as_tensor(t, dtype=F64))
    return s / a


def test_noise_levels_increase_with_time():
    times = torch.linspace(0, 1000, 2001, dtype=F64)
    for process in (VPProcess(), VPProcess(beta_schedule="cosine"), DomainShiftProcess(),
                    DomainShiftProcess(eta="official")):
        level = noise_level(process, times[times < 500])
        assert level[0] == 0 and (level.diff() > 0).all()
    level = noise_level(ResShiftProcess(), torch.linspace(0, 15, 301, dtype=F64))
    assert level[0] == 0 and (level.diff() > 0).all()


# ResShift

def resshift_etas(T, p, sqrt_eta_1, sqrt_eta_T):
    """ResShift Eq. 9-10: sqrt(eta_t) = sqrt(eta_1) b0^beta_t, beta_t = ((t-1)/(T-1))^p (T-1), b0 from eta_T."""
    b0 = math.exp(math.log(sqrt_eta_T**2 / sqrt_eta_1**2) / (2 * (T - 1)))
    return [0.0] + [(sqrt_eta_1 * b0 ** (((t - 1) / (T - 1)) ** p * (T - 1))) ** 2 for t in range(1, T + 1)]


@pytest.mark.parametrize("kappa", [2.0, 1.0])
def test_resshift_paper_schedule(kappa):
    """Paper: eta_1 = min((0.04 / kappa)^2, 0.001), eta_T = 0.99, T = 15, p = 0.3."""
    etas = resshift_etas(15, 0.3, min((0.04 / kappa) ** 2, 0.001) ** 0.5, 0.99**0.5)
    process = ResShiftProcess(kappa=kappa)
    times = torch.arange(16, dtype=F64)
    close(process.shift(times), etas)
    close(etas[1], 4e-4 if kappa == 2 else 1e-3)
    close(etas[15], 0.99)
    a, b, s = process.coefficients(times)
    close(a, [1 - e for e in etas])
    close(b, etas)
    close(s, [kappa * e**0.5 for e in etas])
    close(process.input_scale(times), [(kappa**2 * e + 1) ** -0.5 for e in etas])


@pytest.mark.parametrize("kappa", [2.0, 0.5])
def test_resshift_official_schedule(kappa):
    """Official code (v3): sqrt(eta_1) = min(min_noise_level / kappa, min_noise_level), sqrt(eta_T) = 0.99, T = 4."""
    start = min(0.2 / kappa, 0.2)
    increaser = math.exp(math.log(0.99 / start) / 3)
    sqrt_etas = [start * increaser ** ((i / 3) ** 0.3 * 3) for i in range(4)]  # the code's power_timestep
    process = ResShiftProcess(num_steps=4, kappa=kappa, variant="official", min_noise_level=0.2)
    close(process.shift(torch.arange(5, dtype=F64)), [0.0] + [e**2 for e in sqrt_etas])
    close(process.shift(torch.arange(5, dtype=F64)), resshift_etas(4, 0.3, start, 0.99))
    close(process.shift(4.0), 0.9801)


def test_resshift_between_steps_is_linear_in_eta():
    process = ResShiftProcess()
    close(process.shift(7.25), 0.75 * process.shift(7.0) + 0.25 * process.shift(8.0))


# marginals, configs, errors

@pytest.mark.parametrize("process", [VPProcess(), DomainShiftProcess(),
                                     ResShiftProcess(num_steps=4, variant="official")], ids=["vp", "dossr", "resshift"])
def test_marginal_statistics(process):
    """x_t = a x0 + b y + s eps: per-time mean and variance over many draws, one time per batch element."""
    g = torch.Generator().manual_seed(0)
    t = torch.tensor([0.25, 0.5, 0.75, 1.0], dtype=F64) * min(process.t_max, 499)
    x0, y = torch.full((4, 1, 100, 100), 0.7, dtype=F64), torch.full((4, 1, 100, 100), -0.4, dtype=F64)
    x_t = process.marginal(x0, y, t, torch.randn(x0.shape, generator=g, dtype=F64))
    a, b, s = process.coefficients(t)
    n = x0[0].numel()
    mean, var = x_t.flatten(1).mean(1), x_t.flatten(1).var(1)
    assert ((mean - (0.7 * a - 0.4 * b)).abs() < 5 * s / n**0.5).all()
    assert ((var - s**2).abs() < 5 * s**2 * (2 / n) ** 0.5).all()
    assert torch.equal(process.marginal(x0, None, t, torch.zeros_like(x0)), a.view(-1, 1, 1, 1) * x0)


@pytest.mark.parametrize("process", [
    VPProcess(beta_schedule="cosine", num_train_timesteps=500),
    DomainShiftProcess(t1=400, eta="official", beta_start=0.001, beta_end=0.015),
    ResShiftProcess(num_steps=4, kappa=1.5, power=0.4, variant="official", min_noise_level=0.2),
    ResShiftProcess(eta_1=1e-3, eta_T=0.95),
], ids=["vp", "dossr", "resshift-official", "resshift-explicit"])
def test_build_process_round_trip(process):
    config = process_config(process)
    rebuilt = build_process(config)
    assert type(rebuilt) is type(process) and process_config(rebuilt) == config
    times = torch.linspace(0, process.t_max, 37, dtype=F64)
    for c, c2 in zip(process.coefficients(times), rebuilt.coefficients(times)):
        assert torch.equal(c, c2)


def test_training_times():
    process = DomainShiftProcess()
    t = process.training_times(1000, generator=torch.Generator().manual_seed(0), t_min=10.0, t_max=500.0)
    assert t.dtype == torch.float32 and t.min() > 10 and t.max() <= 500


def test_process_errors_name_the_allowed_values():
    with pytest.raises(ValueError, match="allowed: vp, domain_shift, resshift"):
        build_process({"kind": "edm"})
    with pytest.raises(ValueError, match="allowed: linear, scaled_linear, cosine"):
        VPProcess(beta_schedule="sigmoid")
    with pytest.raises(ValueError, match="allowed: paper, official"):
        DomainShiftProcess(eta="cosine")
    with pytest.raises(ValueError, match="t1 must lie in"):
        DomainShiftProcess(t1=1200)
    with pytest.raises(ValueError, match="integer t1"):
        DomainShiftProcess(t1=250.5, eta="official")
    with pytest.raises(ValueError, match="allowed: paper, official"):
        ResShiftProcess(variant="v3")
    assert set(PROCESSES) == {"vp", "domain_shift", "resshift"}
