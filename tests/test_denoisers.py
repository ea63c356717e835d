import math

import pytest
import torch
from diffusers import AutoencoderKL, UNet2DModel
from diffusers.models.unets.unet_2d import UNet2DOutput

from shiftsr.denoisers import (
    AutoencoderKLCodec,
    IdentityCodec,
    NetworkCall,
    PredictionDenoiser,
    SpaceToDepthCodec,
    ddpm_index,
)

T = 1000


class VPProcess:
    """Stand-in variance-preserving process: a = sqrt(abar), b = 0, s = sqrt(1 - abar), cosine abar."""

    def coefficients(self, t):
        abar = torch.cos(0.5 * math.pi * t / (T + 1)) ** 2
        return abar.sqrt(), torch.zeros_like(t), (1 - abar).sqrt()


class ShiftProcess:
    """Stand-in ResShift-like process: a = 1 - eta, b = eta, s = kappa sqrt(eta), eta linear in t."""

    def coefficients(self, t):
        eta = 0.95 * t / T
        return 1 - eta, eta, 2.0 * eta.sqrt()


def _sample(process, batch=3):
    gen = torch.Generator().manual_seed(0)
    x0, y, eps = (torch.randn(batch, 3, 8, 8, generator=gen) for _ in range(3))
    t = torch.tensor([1.0, 250.0, 900.0])[:batch]
    a, b, s = (c.reshape(-1, 1, 1, 1) for c in process.coefficients(t))
    return x0, y, eps, t, a * x0 + b * y + s * eps, (a, b, s)


@pytest.mark.parametrize("process", [VPProcess(), ShiftProcess()], ids=["vp", "shift"])
def test_epsilon_oracle_recovers_x0(process):
    x0, y, eps, t, x_t, _ = _sample(process)
    denoiser = PredictionDenoiser(lambda x, tt, c: eps, process=process, prediction_type="epsilon")
    torch.testing.assert_close(denoiser(x_t, t, y), x0, atol=1e-5, rtol=0)


def test_v_prediction_oracle_recovers_x0():
    process = VPProcess()
    x0, _, eps, t, x_t, (a, _, s) = _sample(process)
    v = a * eps - s * x0
    denoiser = PredictionDenoiser(lambda x, tt, c: v, process=process, prediction_type="v_prediction")
    torch.testing.assert_close(denoiser(x_t, t, None), x0, atol=1e-5, rtol=0)


@pytest.mark.parametrize("process", [VPProcess(), ShiftProcess()], ids=["vp", "shift"])
def test_residual_and_sample_oracles(process):
    x0, y, _, t, x_t, _ = _sample(process)
    residual = PredictionDenoiser(lambda x, tt, c: x0 - y, process=process, prediction_type="residual")
    sample = PredictionDenoiser(lambda x, tt, c: x0, process=process, prediction_type="sample")
    torch.testing.assert_close(residual(x_t, t, y), x0, atol=1e-6, rtol=0)
    assert torch.equal(sample(x_t, t, y), x0)


def test_diffusers_style_output_with_sample_attribute():
    process = ShiftProcess()
    x0, y, eps, t, x_t, _ = _sample(process)
    denoiser = PredictionDenoiser(lambda x, tt, c: UNet2DOutput(sample=eps), process=process, prediction_type="epsilon")
    torch.testing.assert_close(denoiser(x_t, t, y), x0, atol=1e-5, rtol=0)


def test_network_inputs_scale_concat_and_timestep():
    process = ShiftProcess()
    x0, y, _, t, x_t, _ = _sample(process)
    seen = {}

    def net(x_in, t_net, cond_in):
        seen.update(x_in=x_in, t_net=t_net, cond_in=cond_in)
        return x0

    scale = lambda tt: 1 / (tt + 1)  # noqa: E731
    denoiser = PredictionDenoiser(
        net, process=process, prediction_type="sample", timestep_fn=ddpm_index, input_scale_fn=scale, concat_cond=True
    )
    denoiser(x_t, t, y)
    assert torch.equal(seen["x_in"], torch.cat([x_t * (1 / (t + 1)).reshape(-1, 1, 1, 1), y], dim=1))
    assert torch.equal(seen["t_net"], t - 1)
    assert seen["cond_in"] is None

    plain = PredictionDenoiser(net, process=process, prediction_type="sample")
    plain(x_t, t, y)
    assert seen["x_in"] is x_t and seen["t_net"] is t and seen["cond_in"] is y


def test_prediction_errors():
    vp, shift = VPProcess(), ShiftProcess()
    x0, y, eps, t, x_t, _ = _sample(shift)
    with pytest.raises(ValueError, match="epsilon.*sample.*v_prediction.*residual"):
        PredictionDenoiser(lambda x, tt, c: eps, process=vp, prediction_type="flow")
    with pytest.raises(TypeError, match="b\\(t\\) != 0"):
        PredictionDenoiser(lambda x, tt, c: eps, process=shift, prediction_type="epsilon")(x_t, t, None)
    with pytest.raises(ValueError, match="variance-preserving"):
        PredictionDenoiser(lambda x, tt, c: eps, process=shift, prediction_type="v_prediction")(x_t, t, y)
    with pytest.raises(ValueError, match="a\\(t\\) > 0"):
        PredictionDenoiser(lambda x, tt, c: eps, process=shift, prediction_type="epsilon")(x_t, t * 2, y)
    with pytest.raises(ValueError, match="match x_t shape"):
        PredictionDenoiser(lambda x, tt, c: eps[:, :1], process=vp, prediction_type="epsilon")(x_t, t, y)
    with pytest.raises(TypeError, match="concat_cond=True"):
        PredictionDenoiser(lambda x, tt, c: eps, process=vp, prediction_type="sample", concat_cond=True)(x_t, t, None)


def _tiny_unet(**kwargs):
    torch.manual_seed(0)
    return UNet2DModel(
        sample_size=16,
        out_channels=3,
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=4,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        **kwargs,
    ).eval()


@torch.no_grad()
def test_network_call_runs_channels_last_and_returns_float32():
    unet = _tiny_unet(in_channels=3)
    layouts = []
    unet.register_forward_pre_hook(
        lambda module, args: layouts.append(args[0].is_contiguous(memory_format=torch.channels_last)))
    x_t, t = torch.randn(2, 3, 16, 16), torch.tensor([10.0, 500.0])
    reference = unet(x_t, t).sample  # a diffusers output: NetworkCall takes its .sample
    out = NetworkCall(lambda x, t, cond: unet(x, t))(x_t, t, None)
    assert layouts == [False, True]
    torch.testing.assert_close(out, reference, atol=1e-5, rtol=0)
    half = NetworkCall(lambda x, t, cond: unet(x, t), dtype=torch.bfloat16)(x_t, t, None)
    assert half.dtype == torch.float32 and half.is_contiguous(memory_format=torch.channels_last)  # no copy back
    assert 0 < (half - reference).abs().max() < 0.1  # bf16 autocast ran, close to fp32


def test_space_to_depth_codec_round_trip_and_size_error():
    codec = SpaceToDepthCodec(factor=4)
    x = torch.rand(2, 3, 8, 12)
    z = codec.encode(x)
    assert z.shape == (2, 48, 2, 3) and codec.channels == 48 and codec.scale == 4
    assert torch.equal(z[0, :16, 0, 0], x[0, 0, :4, :4].flatten() * 2 - 1)  # model space sees [-1, 1]
    torch.testing.assert_close(codec.decode(z), x, atol=1e-7, rtol=0)
    with pytest.raises(ValueError, match="8x10 .* factor 4"):
        codec.encode(torch.randn(1, 3, 8, 10))


def test_identity_codec():
    codec, x = IdentityCodec(), torch.rand(1, 3, 4, 4)
    assert torch.equal(codec.encode(x), x * 2 - 1) and (codec.scale, codec.channels) == (1, 3)
    torch.testing.assert_close(codec.decode(codec.encode(x)), x, atol=1e-7, rtol=0)


@torch.no_grad()
def test_autoencoder_kl_codec_applies_scaling_factor():
    torch.manual_seed(0)
    vae = AutoencoderKL(
        block_out_channels=(8, 8),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        norm_num_groups=4,
        latent_channels=4,
    ).eval()
    image = torch.rand(2, 3, 16, 16)
    x = image * 2 - 1
    codec = AutoencoderKLCodec(vae)
    z = codec.encode(image)
    assert z.shape == (2, 4, 8, 8) and (codec.scale, codec.channels) == (2, 4)
    assert torch.equal(z, vae.encode(x).latent_dist.mode() * 0.18215)
    assert torch.equal(codec.decode(z), (vae.decode(z / 0.18215).sample + 1) / 2)
    custom = AutoencoderKLCodec(vae, scaling_factor=0.5)
    assert torch.equal(custom.encode(image), vae.encode(x).latent_dist.mode() * 0.5)
    assert custom.decode(z).shape == (2, 3, 16, 16)
