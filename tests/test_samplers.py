"""Samplers on analytic denoisers: oracle exactness, Gaussian-data convergence and distributions, papers' formulas."""
import math

import numpy as np
import pytest
import torch

from shiftsr.methods import resshift_grid
from shiftsr.processes import DomainShiftProcess, ResShiftProcess, VPProcess, recoverable_time, start_state
from shiftsr.processes.start import lost_energy
from shiftsr.samplers import (ddim_step, dossr_timesteps, sample_ddim, sample_ddpm, sample_dossr, sample_dpmpp_2m,
                              sample_resshift, vp_timesteps)
from shiftsr.samplers.common import batch_time, check_times, coefficients, randn_like

F64 = torch.float64
MU, C, XH = 0.3, 0.5, 0.8  # data x0 ~ N(MU, C^2) per pixel; the constant LR (xh, y) of the shifted paths
VP_LINEAR, VP_COSINE = VPProcess(), VPProcess(beta_schedule="cosine")
DOSSR, DOSSR_OFFICIAL = DomainShiftProcess(), DomainShiftProcess(eta="official")
RESSHIFT = ResShiftProcess()


def gen(seed):
    return torch.Generator().manual_seed(seed)


def dossr_start(process, xh, t1, generator):
    """DoSSR Alg. 1 line 1 through the one start formula: the marginal around xh at t1."""
    return start_state(process, xh, xh, t1, randn_like(xh, generator))


def resshift_start(process, y, generator):
    """ResShift Eq. 4 through the one start formula: the marginal around y at T, y + kappa sqrt(eta_T) eps."""
    return start_state(process, y, y, process.t_max, randn_like(y, generator))


def inject_noise(process, x_up, t, generator):
    """Diff-SR Sec. 3.2 through the one start formula: the VP marginal around the upsampled LR."""
    return start_state(process, x_up, None, t, randn_like(x_up, generator))


def full_chain(process):
    """ResShift's whole chain T, ..., 1, 0."""
    return resshift_grid(process, int(process.t_max), process.t_max)


NOISE_INJECTION = {"ddim": lambda *a, **k: sample_ddim(*a, eta=0.0, **k), "ddpm": sample_ddpm,
                   "dpmpp_2m": sample_dpmpp_2m}


def sample_noise_injection(denoiser, x_up, *, process, t_start, steps, sampler, generator):
    """Diff-SR Definition 1: inject noise up to t_start, then a VP sampler to t = 0."""
    x = inject_noise(process, x_up, t_start, generator)
    return NOISE_INJECTION[sampler](denoiser, x, vp_timesteps(process, steps, t_start=t_start), process=process,
                                    generator=generator)


def oracle(x0):
    return lambda x, t, cond: x0


def gaussian_denoiser(process, y=None):
    """The exact posterior mean E[x0 | x_t] for x0 ~ N(MU, C^2) on the path a x0 + b y + s eps."""
    def denoise(x, t, cond):
        a, b, s = coefficients(process, float(t[0]))
        return MU + a * C**2 / (a * a * C**2 + s * s) * (x - a * MU - (0.0 if y is None else b * y))
    return denoise


def marginal(process, t, y, generator, shape=(1, 1, 100, 200)):
    """A draw from the exact marginal of x_t under Gaussian data: N(a MU + b y, a^2 C^2 + s^2)."""
    a, b, s = coefficients(process, t)
    z = torch.randn(shape, generator=generator, dtype=F64)
    return a * MU + (0.0 if y is None else b * y) + math.sqrt(a * a * C**2 + s * s) * z


def start_time(process):
    return process.t1 if isinstance(process, DomainShiftProcess) else process.t_max


def uniform(t_start, steps):
    return torch.linspace(t_start, 0, steps + 1, dtype=F64).tolist()


GENERIC = {
    "ddim": lambda *a, **k: sample_ddim(*a, eta=0.0, **k),
    "ddim-eta.5": lambda *a, **k: sample_ddim(*a, eta=0.5, **k),
    "ddim-eta1": lambda *a, **k: sample_ddim(*a, eta=1.0, **k),
    "ddpm": sample_ddpm,
    "dpmpp_2m": sample_dpmpp_2m,
}
GENERIC_PROCESSES = {"vp-linear": VP_LINEAR, "vp-cosine": VP_COSINE, "dossr": DOSSR,
                     "dossr-official": DOSSR_OFFICIAL, "resshift": RESSHIFT}


# (a) an oracle denoiser returning the true x0 gives back x0 for chains that end at the clean state t = 0

@pytest.mark.parametrize("steps", [1, 2, 3, 8])
@pytest.mark.parametrize("name", GENERIC)
@pytest.mark.parametrize("pname", GENERIC_PROCESSES)
def test_oracle_generic_samplers(pname, name, steps):
    process = GENERIC_PROCESSES[pname]
    g = gen(0)
    x0, y, eps = (torch.randn(2, 3, 4, 4, generator=g, dtype=F64) for _ in range(3))
    y = None if isinstance(process, VPProcess) and not isinstance(process, DomainShiftProcess) else y
    ts = uniform(start_time(process), steps)
    a, b, s = coefficients(process, ts[0])
    x = a * x0 + (0.0 if y is None else b * y) + s * eps
    seen = []
    out = GENERIC[name](oracle(x0), x, ts, process=process, y=y, generator=gen(1),
                        callback=lambda d: seen.append(d["x"]))
    torch.testing.assert_close(out, x0, atol=1e-5, rtol=0)
    if name in ("ddim", "dpmpp_2m"):  # deterministic: every state stays on a_t x0 + b_t y + s_t eps
        for t, x_t in zip(ts, seen):
            a, b, s = coefficients(process, t)
            torch.testing.assert_close(x_t, a * x0 + (0.0 if y is None else b * y) + s * eps, atol=1e-9, rtol=0)


@pytest.mark.parametrize("steps", [1, 2, 3, 5, 9])
@pytest.mark.parametrize("mode", ["order1", "order2", "order3", "ode"])
@pytest.mark.parametrize("process", [DOSSR, DOSSR_OFFICIAL], ids=["paper", "official-eta"])
def test_oracle_dossr(process, mode, steps):
    g = gen(0)
    x0, xh = torch.randn(2, 3, 4, 4, generator=g, dtype=F64), torch.randn(2, 3, 4, 4, generator=g, dtype=F64)
    ts = dossr_timesteps(process, steps)
    assert ts[0] == process.t1 and ts[-1] == 0
    x = dossr_start(process, xh, ts[0], gen(1))
    order = 1 if mode == "ode" else int(mode[-1])
    out = sample_dossr(oracle(x0), x, ts, process=process, xh=xh, order=order, deterministic=mode == "ode",
                       generator=gen(2))
    torch.testing.assert_close(out, x0, atol=1e-5, rtol=0)


@pytest.mark.parametrize("ts", [full_chain(RESSHIFT), [15.0, 0.0], [15.0, 9.0, 4.0, 1.0, 0.0],
                                [15.0, 12.5, 7.25, 0.5, 0.0]])
@pytest.mark.parametrize("deterministic", [False, True])
def test_oracle_resshift(deterministic, ts):
    g = gen(0)
    x0, y = torch.randn(2, 3, 4, 4, generator=g, dtype=F64), torch.randn(2, 3, 4, 4, generator=g, dtype=F64)
    x = resshift_start(RESSHIFT, y, gen(1))
    if deterministic:
        out = sample_ddim(oracle(x0), x, ts, process=RESSHIFT, y=y, eta=0.0)
    else:
        out = sample_resshift(oracle(x0), x, ts, process=RESSHIFT, generator=gen(2))
    torch.testing.assert_close(out, x0, atol=1e-5, rtol=0)


@pytest.mark.parametrize("steps", [1, 4, 10])
@pytest.mark.parametrize("sampler", ["ddim", "ddpm", "dpmpp_2m"])
def test_oracle_noise_injection(sampler, steps):
    g = gen(0)
    x0, x_up = torch.randn(2, 3, 8, 8, generator=g, dtype=F64), torch.randn(2, 3, 8, 8, generator=g, dtype=F64)
    out = sample_noise_injection(oracle(x0), x_up, process=VP_LINEAR, t_start=400.0, steps=steps, sampler=sampler,
                                 generator=gen(1))
    torch.testing.assert_close(out, x0, atol=1e-5, rtol=0)


# (b) Gaussian data and the exact posterior-mean denoiser

@pytest.mark.parametrize("process", [VP_LINEAR, VP_COSINE], ids=["linear", "cosine"])
def test_ode_samplers_converge_at_their_order(process):
    x = marginal(process, process.t_max, None, gen(0), shape=(1, 64))
    a, _, s = coefficients(process, process.t_max)
    # the probability-flow ODE maps u = x / a linearly: u_0 - MU = (u_T - MU) C / sqrt(C^2 + l_T^2), l = s / a
    exact = MU + (x / a - MU) * C / math.sqrt(C**2 + (s / a) ** 2)
    steps = [8, 16, 32, 64] if process is VP_LINEAR else [4, 8, 16, 32]
    slopes = {}
    for name, sampler in (("ddim", sample_ddim), ("dpmpp_2m", sample_dpmpp_2m)):
        errors = [(sampler(gaussian_denoiser(process), x, vp_timesteps(process, n), process=process) - exact)
                  .abs().max().item() for n in steps]
        slopes[name] = -np.polyfit(np.log(steps), np.log(errors), 1)[0]
    assert 0.8 < slopes["ddim"] < 1.3, slopes
    assert slopes["dpmpp_2m"] > 1.6, slopes
    # and a 1000-step run of each lands within 1e-2 of the exact map from the same starting noise
    for sampler in (sample_ddim, sample_dpmpp_2m):
        reference = sampler(gaussian_denoiser(process), x, vp_timesteps(process, 1000), process=process)
        assert (reference - exact).abs().max() < 1e-2


def wrong_ancestral(denoiser, x, ts, *, process, y, generator, noise_scale):
    """A deliberately wrong DDPM/DoSSR-1 chain: ddim_step(eta=1) with its fresh noise scaled by noise_scale."""
    for t_s, t_t in zip(ts, ts[1:]):
        cs, ct = coefficients(process, t_s), coefficients(process, t_t)
        x0 = denoiser(x, batch_time(t_s, x), None)
        x = ddim_step(x, x0, y, cs, ct, eta=1.0, noise=noise_scale * randn_like(x, generator))
    return x


MEAN_TOL, STD_TOL = 0.012, 0.02  # 20000 pixels: sampling error about 0.004 on both; 10% noise error gives >= 0.04


def matches_data(out):
    return abs(out.mean().item() - MU) < MEAN_TOL and abs(out.std().item() - C) < STD_TOL


def test_ddpm_output_distribution_matches_data():
    ts, g = vp_timesteps(VP_LINEAR, 1000), gen(3)
    out = sample_ddpm(gaussian_denoiser(VP_LINEAR), marginal(VP_LINEAR, ts[0], None, g), ts, process=VP_LINEAR,
                      generator=g)
    assert matches_data(out), (out.mean(), out.std())
    for noise_scale in (0.9, 1.1, 2.0):  # the tolerance is tight enough to catch a wrong noise coefficient
        g = gen(3)
        wrong = wrong_ancestral(gaussian_denoiser(VP_LINEAR), marginal(VP_LINEAR, ts[0], None, g), ts,
                                process=VP_LINEAR, y=None, generator=g, noise_scale=noise_scale)
        assert not matches_data(wrong), (noise_scale, wrong.mean(), wrong.std())


@pytest.mark.parametrize("order", [1, 2, 3])
def test_dossr_sde_output_distribution_matches_data(order):
    xh = torch.full((1, 1, 100, 200), XH, dtype=F64)
    ts, g = dossr_timesteps(DOSSR, 1000), gen(4)
    out = sample_dossr(gaussian_denoiser(DOSSR, xh), dossr_start(DOSSR, xh, ts[0], g), ts, process=DOSSR, xh=xh,
                       order=order, generator=g)
    assert matches_data(out), (out.mean(), out.std())
    if order == 1:
        for noise_scale in (0.9, 1.1):
            g = gen(4)
            wrong = wrong_ancestral(gaussian_denoiser(DOSSR, xh), dossr_start(DOSSR, xh, ts[0], g), ts,
                                    process=DOSSR, y=xh, generator=g, noise_scale=noise_scale)
            assert not matches_data(wrong), (noise_scale, wrong.mean(), wrong.std())


def test_resshift_ancestral_output_distribution_matches_data():
    y, g = torch.full((1, 1, 100, 200), XH, dtype=F64), gen(5)
    ts = uniform(RESSHIFT.t_max, 600)  # a fine subset of times: the chain converges to the reverse SDE
    out = sample_resshift(gaussian_denoiser(RESSHIFT, y), marginal(RESSHIFT, ts[0], y, g), ts, process=RESSHIFT,
                          generator=g)
    assert matches_data(out), (out.mean(), out.std())


# closed forms written out from the papers

def vp_linear_abar():
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=F64)
    return betas, torch.cat([torch.ones(1, dtype=F64), torch.cumprod(1 - betas, 0)])  # abar at times 0..1000


@pytest.mark.parametrize("t, t_prev", [(1000, 999), (500, 499), (2, 1), (1, 0), (700, 650)])
def test_ddpm_step_is_the_ddpm_posterior(t, t_prev):
    """Ho et al. Eq. 6-7: q(x' | x_t, x0) = N(sqrt(abar')beta/(1-abar) x0 + sqrt(alpha)(1-abar')/(1-abar) x_t, var)."""
    _, abar = vp_linear_abar()
    beta = 1 - abar[t] / abar[t_prev]  # beta_t for one step; the skipped-step chain's beta for a jump
    x_t, x0 = torch.randn(2, 1, 3, 3, generator=gen(0), dtype=F64), torch.randn(2, 1, 3, 3, generator=gen(1), dtype=F64)
    mean = (abar[t_prev].sqrt() * beta / (1 - abar[t]) * x0
            + (1 - beta).sqrt() * (1 - abar[t_prev]) / (1 - abar[t]) * x_t)
    var = (1 - abar[t_prev]) / (1 - abar[t]) * beta  # beta tilde
    z = torch.randn(x_t.shape, generator=gen(2), dtype=torch.float32).to(F64)
    out = sample_ddpm(oracle(x0), x_t, [t, t_prev], process=VP_LINEAR, generator=gen(2))
    torch.testing.assert_close(out, mean + var.sqrt() * z, atol=1e-12, rtol=0)


def test_dpmpp_2m_matches_lu_algorithm_2():
    """Lu et al. 2022 Alg. 2 in VP (alpha, sigma) form, on a non-uniform grid that ends at the clean state."""
    _, abar = vp_linear_abar()
    ts = [1000, 800, 550, 300, 120, 40, 0]
    alpha, sigma = abar.sqrt(), (1 - abar).sqrt()
    lam = [math.inf if t == 0 else float((alpha[t] / sigma[t]).log()) for t in ts]
    denoiser, x = gaussian_denoiser(VP_LINEAR), marginal(VP_LINEAR, 1000, None, gen(0), shape=(1, 50))
    ref, preds = x.clone(), []
    for i in range(1, len(ts)):
        s, t = ts[i - 1], ts[i]
        preds.append(denoiser(ref, batch_time(s, ref), None))
        h = lam[i] - lam[i - 1]
        if i == 1 or t == 0:  # the first step (no history) and the last (h = inf) are first order
            d = preds[-1]
        else:
            r = (lam[i - 1] - lam[i - 2]) / h
            d = (1 + 1 / (2 * r)) * preds[-1] - 1 / (2 * r) * preds[-2]
        ref = (sigma[t] / sigma[s]) * ref - alpha[t] * math.expm1(-h) * d
    torch.testing.assert_close(sample_dpmpp_2m(denoiser, x, ts, process=VP_LINEAR), ref, atol=1e-10, rtol=0)


def resshift_paper_etas(T=15, kappa=2.0, p=0.3):
    """ResShift Eq. 9-10 with eta_1 = min((0.04 / kappa)^2, 0.001), eta_T = 0.99; eta_0 = 0 (clean)."""
    eta_1, eta_T = min((0.04 / kappa) ** 2, 0.001), 0.99
    b0 = math.exp(math.log(eta_T / eta_1) / (2 * (T - 1)))
    return [0.0] + [(math.sqrt(eta_1) * b0 ** (((t - 1) / (T - 1)) ** p * (T - 1))) ** 2 for t in range(1, T + 1)]


def test_resshift_ancestral_step_is_eq_6_7():
    etas, kappa = resshift_paper_etas(), 2.0
    x_t, f = torch.randn(2, 1, 3, 3, generator=gen(0), dtype=F64), torch.randn(2, 1, 3, 3, generator=gen(1), dtype=F64)
    for t in (15, 8, 1):
        alpha = etas[t] - etas[t - 1]
        z = torch.randn(x_t.shape, generator=gen(2), dtype=torch.float32).to(F64)
        mean = etas[t - 1] / etas[t] * x_t + alpha / etas[t] * f
        expected = mean + kappa * math.sqrt(etas[t - 1] * alpha / etas[t]) * z
        out = sample_resshift(oracle(f), x_t, [t, t - 1], process=RESSHIFT, generator=gen(2))
        torch.testing.assert_close(out, expected, atol=1e-12, rtol=0)


def test_resshift_deterministic_is_generic_ddim():
    """MATH.md Sec. 2: e = (x - f - eta (y - f)) / (kappa sqrt(eta)); x' = f + eta' (y - f) + kappa sqrt(eta') e."""
    etas, kappa = resshift_paper_etas(), 2.0
    y = torch.randn(2, 1, 3, 3, generator=gen(0), dtype=F64)
    denoiser, x = gaussian_denoiser(RESSHIFT, y), resshift_start(RESSHIFT, y, gen(1))
    ts, ref = full_chain(RESSHIFT), x.clone()
    for t in range(15, 0, -1):
        f = denoiser(ref, batch_time(t, ref), None)
        e = (ref - f - etas[t] * (y - f)) / (kappa * math.sqrt(etas[t]))
        ref = f + etas[t - 1] * (y - f) + kappa * math.sqrt(etas[t - 1]) * e
    torch.testing.assert_close(sample_ddim(denoiser, x, ts, process=RESSHIFT, y=y), ref, atol=1e-12, rtol=0)


# (c) DoSSR Algorithms 1-3, written in x-space from the paper

def sd_alpha_sigma():
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=F64) ** 2
    abar = torch.cat([torch.ones(1, dtype=F64), torch.cumprod(1 - betas, 0)])
    return abar.sqrt(), (1 - abar).sqrt()


def paper_dossr(x, ts, xh, eta, preds, noises, order):
    """DoSSR Alg. 1-3: x_t = Linear Term + DoSG + PAT + Noise Term, lambda = sigma / (alpha (1 - eta))."""
    alpha, sigma = sd_alpha_sigma()
    lam = [float(sigma[t] / (alpha[t] * (1 - eta[t]))) for t in ts]
    for i in range(1, len(ts)):
        s, t, ls, lt = ts[i - 1], ts[i], lam[i - 1], lam[i]
        a_t, a_s = alpha[t] * (1 - eta[t]), alpha[s] * (1 - eta[s])
        dosg = a_t * (eta[t] / (1 - eta[t]) - eta[s] / (1 - eta[s]) * lt**2 / ls**2) * xh
        linear = a_t / a_s * lt**2 / ls**2 * x
        noise = a_t * math.sqrt(lt**2 - lt**4 / ls**2) * noises[i - 1]
        pat = a_t * (1 - lt**2 / ls**2) * preds[i - 1]
        if order >= 2 and i >= 2:  # D_i: first divided difference with the previous prediction
            d = (preds[i - 1] - preds[i - 2]) / (ls - lam[i - 2])
            pat = pat - a_t * (lt - ls) ** 2 / ls * d
            if order == 3 and i >= 3:  # U_i: second derivative from two first differences
                d_prev = (preds[i - 2] - preds[i - 3]) / (lam[i - 2] - lam[i - 3])
                u = 2 * (d - d_prev) / (ls - lam[i - 3])
                pat = pat + a_t * ((ls - 3 * lt) * (ls - lt) / 2 - lt**2 * math.log(lt / ls)) * u
        x = linear + dosg + pat + noise
    return x


def official_eta():
    rising = (1 - torch.cos(math.pi * torch.linspace(0.001, 0.999, 500, dtype=F64))) / 2
    return torch.cat([torch.zeros(1, dtype=F64), rising, torch.ones(500, dtype=F64)])


def paper_eta():
    t = torch.arange(1001, dtype=F64)
    return torch.where(t < 500, (1 - torch.cos(math.pi * t / 500)) / 2, torch.ones_like(t))


@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("case", ["official", "paper-below-t1"])
def test_sample_dossr_matches_paper_algorithms(case, order):
    if case == "official":  # the official table: finite lambda (about 6.5e5) at t = 500
        process, eta, ts = DOSSR_OFFICIAL, official_eta(), dossr_timesteps(DOSSR_OFFICIAL, 5, official=True)
        assert ts == [500, 400, 300, 201, 101, 1]
    else:
        process, eta, ts = DOSSR, paper_eta(), [450, 380, 300, 210, 120, 60, 20, 3]
    ts = [int(t) for t in ts]
    shape, g = (2, 1, 3, 3), gen(0)
    xh, x = torch.randn(shape, generator=g, dtype=F64), torch.randn(shape, generator=g, dtype=F64)
    preds = [torch.randn(shape, generator=g, dtype=F64) for _ in ts[1:]]
    noise_gen = gen(1)
    noises = [torch.randn(shape, generator=noise_gen, dtype=torch.float32).to(F64) for _ in ts[1:]]
    calls = iter(preds)
    out = sample_dossr(lambda x_t, t, cond: next(calls), x, ts, process=process, xh=xh, order=order,
                       generator=gen(1))
    expected = paper_dossr(x, ts, xh, eta, preds, noises, order)
    torch.testing.assert_close(out, expected, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("order", [1, 2, 3])
def test_dossr_without_guidance_is_the_papers_eta_0_case(order):
    """DoSSR Sec. 4.3 "w/o DoSG": Alg. 1-3 with eta_t = 0 (no DoSG term, lambda = sigma / alpha), t1 = T."""
    ts, shape, g = [990, 790, 560, 330, 120, 5], (2, 1, 3, 3), gen(0)  # paper_dossr needs 0 < lambda < inf
    xh, x = torch.randn(shape, generator=g, dtype=F64), torch.randn(shape, generator=g, dtype=F64)
    preds = [torch.randn(shape, generator=g, dtype=F64) for _ in ts[1:]]
    noise_gen = gen(1)
    noises = [torch.randn(shape, generator=noise_gen, dtype=torch.float32).to(F64) for _ in ts[1:]]
    process = DomainShiftProcess(t1=1000)
    runs = {}
    for guidance in (True, False):
        calls = iter(preds)
        runs[guidance] = sample_dossr(lambda x_t, t, cond: next(calls), x, ts, process=process, xh=xh, order=order,
                                      guidance=guidance, generator=gen(1))
    no_shift = torch.zeros(1001, dtype=F64)
    torch.testing.assert_close(runs[False], paper_dossr(x, ts, xh, no_shift, preds, noises, order), atol=1e-10,
                               rtol=1e-10)
    # with guidance the same chain is the t1 = T DoSSR of Alg. 1-3 and lands elsewhere
    t = torch.arange(1001, dtype=F64)
    torch.testing.assert_close(runs[True], paper_dossr(x, ts, xh, (1 - torch.cos(math.pi * t / 1000)) / 2, preds,
                                                       noises, order), atol=1e-10, rtol=1e-10)
    assert (runs[True] - runs[False]).abs().max() > 1e-3  # far above the 1e-10 agreement with each reference


def test_dossr_without_guidance_runs_the_vp_path_of_the_same_betas():
    sd_vp = VPProcess(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    g = gen(0)
    x0, xh, eps = (torch.randn(1, 2, 4, 4, generator=g, dtype=F64) for _ in range(3))
    ts = dossr_timesteps(DOSSR, 6)
    for mode in ("order3", "ode"):
        kwargs = dict(xh=xh, order=1 if mode == "ode" else 3, deterministic=mode == "ode")
        on_vp = sample_dossr(gaussian_denoiser(sd_vp), x0, ts, process=sd_vp, generator=gen(1), **kwargs)
        unguided = sample_dossr(gaussian_denoiser(sd_vp), x0, ts, process=DOSSR, guidance=False, generator=gen(1),
                                **kwargs)
        torch.testing.assert_close(unguided, on_vp, atol=1e-12, rtol=0)
    # the deterministic step keeps an oracle chain on sqrt(abar) x0 + sqrt(1 - abar) eps, where DoSG would add b xh
    a, _, s = coefficients(sd_vp, ts[0])
    seen = []
    sample_dossr(oracle(x0), a * x0 + s * eps, ts, process=DOSSR, xh=xh, order=1, deterministic=True,
                 guidance=False, callback=lambda d: seen.append(d["x"]))
    for t, x_t in zip(ts, seen):
        a, _, s = coefficients(sd_vp, t)
        torch.testing.assert_close(x_t, a * x0 + s * eps, atol=1e-9, rtol=0)


# (d) seeds, callbacks and errors

STOCHASTIC = {
    "ddim-eta.5": lambda d, x, ts, y, g, cb: sample_ddim(d, x, ts, process=DOSSR, y=y, eta=0.5, generator=g,
                                                         callback=cb),
    "ddpm": lambda d, x, ts, y, g, cb: sample_ddpm(d, x, ts, process=VP_LINEAR, generator=g, callback=cb),
    "dpmpp_2m": lambda d, x, ts, y, g, cb: sample_dpmpp_2m(d, x, ts, process=VP_COSINE, generator=g, callback=cb),
    "dossr-3": lambda d, x, ts, y, g, cb: sample_dossr(d, x, ts, process=DOSSR, xh=y, generator=g, callback=cb),
    "resshift": lambda d, x, ts, y, g, cb: sample_resshift(d, x, ts, process=RESSHIFT, generator=g, callback=cb),
}
GRIDS = {"ddim-eta.5": uniform(500, 6), "ddpm": uniform(1000, 6), "dpmpp_2m": uniform(1000, 6),
         "dossr-3": uniform(500, 6), "resshift": full_chain(RESSHIFT)}


@pytest.mark.parametrize("name", STOCHASTIC)
def test_batch_equals_singles_and_callback_per_step(name):
    process = {"ddpm": VP_LINEAR, "dpmpp_2m": VP_COSINE, "resshift": RESSHIFT}.get(name, DOSSR)
    g = gen(0)
    x, y = torch.randn(3, 2, 4, 4, generator=g, dtype=F64), torch.randn(3, 2, 4, 4, generator=g, dtype=F64)
    denoiser, ts, seen = gaussian_denoiser(process, y), GRIDS[name], []
    batch = STOCHASTIC[name](denoiser, x, ts, y, [gen(10 + i) for i in range(3)], seen.append)
    assert [d["i"] for d in seen] == list(range(len(ts) - 1))
    assert [d["t"] for d in seen] == ts[:-1]
    assert all(d["denoised"].shape == x.shape for d in seen)
    for i in range(3):
        single = STOCHASTIC[name](gaussian_denoiser(process, y[i:i + 1]), x[i:i + 1], ts, y[i:i + 1], gen(10 + i), None)
        torch.testing.assert_close(batch[i:i + 1], single, atol=1e-12, rtol=0)


def test_noise_injection_batch_equals_singles():
    x_up = torch.randn(3, 1, 8, 8, generator=gen(0), dtype=F64)
    denoiser = gaussian_denoiser(VP_LINEAR)
    batch = sample_noise_injection(denoiser, x_up, process=VP_LINEAR, t_start=300.0, steps=5, sampler="ddpm",
                                   generator=[gen(i) for i in range(3)])
    for i in range(3):
        single = sample_noise_injection(denoiser, x_up[i:i + 1], process=VP_LINEAR, t_start=300.0, steps=5,
                                        sampler="ddpm", generator=gen(i))
        torch.testing.assert_close(batch[i:i + 1], single, atol=1e-12, rtol=0)


def test_errors_name_the_allowed_values():
    x = torch.zeros(1, 1, 2, 2, dtype=F64)
    den = oracle(x)
    with pytest.raises(ValueError, match="strictly decreasing"):
        sample_ddim(den, x, [0.0, 10.0], process=VP_LINEAR)
    with pytest.raises(ValueError, match="at least 2 entries"):
        sample_dpmpp_2m(den, x, [10.0], process=VP_LINEAR)
    with pytest.raises(ValueError, match="strictly decreasing"):
        sample_resshift(den, x, [3.0, 3.0, 0.0], process=RESSHIFT)
    with pytest.raises(ValueError, match="cannot start from the clean state"):
        sample_resshift(den, x, [0.0, -1.0], process=RESSHIFT)
    with pytest.raises(ValueError, match="order must be 1, 2 or 3"):
        sample_dossr(den, x, [500.0, 0.0], process=DOSSR, xh=x, order=4)
    with pytest.raises(ValueError, match="eta must lie in"):
        sample_ddim(den, x, [10.0, 0.0], process=VP_LINEAR, eta=1.5)
    with pytest.raises(ValueError, match="pass y"):
        sample_ddim(den, x, [400.0, 0.0], process=DOSSR)
    with pytest.raises(ValueError, match="a\\(t\\) > 0"):  # DoSSR: a step cannot end where the signal is gone
        sample_ddim(den, x, [900.0, 600.0], process=DOSSR, y=x)
    with pytest.raises(ValueError, match="allowed: uniform, leading, trailing"):
        vp_timesteps(VP_LINEAR, 10, spacing="linspace")
    with pytest.raises(ValueError, match="steps must lie in"):
        vp_timesteps(VP_LINEAR, 0)
    with pytest.raises(ValueError, match="t_start must lie in"):
        vp_timesteps(VP_LINEAR, 10, t_start=1200)
    with pytest.raises(ValueError, match="allowed: paper, kl"):
        recoverable_time(VP_LINEAR, 4, rule="psnr")
    with pytest.raises(ValueError, match="scales 1 to 8"):
        recoverable_time(VP_LINEAR, 16)
    with pytest.raises(ValueError, match="needs x_up"):
        recoverable_time(VP_LINEAR, 4, rule="kl")
    with pytest.raises(ValueError, match="steps: this ResShift chain has 15 steps"):
        resshift_grid(RESSHIFT, 16, 15.0)
    assert check_times([3, 2.5, 0]) == [3.0, 2.5, 0.0]


# time grids, starts and noise-injection helpers

def test_time_grids_and_starts():
    # diffusers conventions for T = 1000, 10 steps (index = time - 1); both end at the clean state
    assert vp_timesteps(VP_LINEAR, 10, spacing="leading") == [float(t) for t in range(901, 0, -100)] + [0.0]
    assert vp_timesteps(VP_LINEAR, 10, spacing="trailing") == [float(t) for t in range(1000, 0, -100)] + [0.0]
    assert vp_timesteps(VP_LINEAR, 3, spacing="trailing") == [1000.0, 667.0, 333.0, 0.0]
    assert vp_timesteps(VP_LINEAR, 4, t_start=300) == [300.0, 225.0, 150.0, 75.0, 0.0]
    assert full_chain(ResShiftProcess(num_steps=4, variant="official")) == [4.0, 3.0, 2.0, 1.0, 0.0]
    assert resshift_grid(RESSHIFT, 3, 15.0) == [15.0, 8.0, 1.0, 0.0] and resshift_grid(RESSHIFT, 1, 15.0) == [15.0, 0.0]
    assert resshift_grid(RESSHIFT, 4, 6.3) == [7.0, 5.0, 3.0, 1.0, 0.0]  # a shortened chain starts at a whole step
    y = torch.randn(2, 1, 3, 3, generator=gen(0), dtype=F64)
    eps = torch.randn(y.shape, generator=gen(1), dtype=torch.float32).to(F64)
    torch.testing.assert_close(resshift_start(RESSHIFT, y, gen(1)), y + 2.0 * 0.99**0.5 * eps)
    _, abar = vp_linear_abar()
    torch.testing.assert_close(inject_noise(VP_LINEAR, y, 400, gen(1)),
                               abar[400].sqrt() * y + (1 - abar[400]).sqrt() * eps, atol=1e-12, rtol=0)


def pink_image(n, generator):
    """A synthetic natural-like image: power spectrum 1/f^2, std 0.5."""
    fy, fx = torch.fft.fftfreq(n).view(-1, 1), torch.fft.rfftfreq(n).view(1, -1)
    f = (fx**2 + fy**2).sqrt()
    f[0, 0] = 1.0
    spectrum = torch.complex(torch.randn(f.shape, generator=generator), torch.randn(f.shape, generator=generator)) / f
    spectrum[0, 0] = 0
    x = torch.fft.irfft2(spectrum, s=(n, n)).to(F64)
    return (x / x.std() * 0.5).view(1, 1, n, n)


@pytest.mark.parametrize("scale", [2, 4])
def test_lost_energy_estimates_the_true_loss_on_1_over_f_images(scale):
    hr = torch.cat([pink_image(256, gen(i)) for i in range(2)])
    lr = torch.nn.functional.interpolate(hr, scale_factor=1 / scale, mode="bicubic", antialias=True)
    x_up = torch.nn.functional.interpolate(lr, size=hr.shape[-2:], mode="bicubic")
    true = (hr - x_up).square().mean().item()
    assert 0.75 * true < lost_energy(x_up, scale) < 1.25 * true
    assert lost_energy(torch.full_like(x_up, 0.3), scale) < 1e-20  # a flat image has lost nothing


def test_recoverable_time_rules():
    # the paper's fractions of T, interpolated in log2(scale)
    assert recoverable_time(VP_LINEAR, 2) == pytest.approx(200)
    assert recoverable_time(VP_LINEAR, 4) == pytest.approx(400)
    assert recoverable_time(VP_LINEAR, 8) == pytest.approx(575)
    assert recoverable_time(VP_LINEAR, 2**1.5) == pytest.approx(300)
    assert recoverable_time(VP_LINEAR, 1) == 0
    # the KL rule: the smallest t with abar E / (2 (1 - abar)) <= tolerance; more loss needs more noise
    _, abar = vp_linear_abar()
    x_up = pink_image(64, gen(0))
    times = [recoverable_time(VP_LINEAR, s, rule="kl", x_up=x_up, tolerance=0.01) for s in (2, 4, 8)]
    assert times[0] < times[1] < times[2]
    for scale, t in zip((2, 4, 8), times):
        energy = lost_energy(x_up, scale)
        kl = abar * energy / (2 * (1 - abar))
        assert kl[int(t)] <= 0.01 < kl[int(t) - 1]
    assert recoverable_time(VP_LINEAR, 4, rule="kl", x_up=torch.zeros(1, 1, 8, 8, dtype=F64)) == 0
