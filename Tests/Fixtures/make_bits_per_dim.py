"""The variational bound of the tiny pipeline on one image, computed independently of swift-ddpm:
improved-diffusion's calc_bpd_loop written out here with numpy on diffusers' own scheduler arrays
(DDPMScheduler.betas and alphas_cumprod, float32 as diffusers holds them, in float64 arithmetic)
and the tiny UNet2DModel run by diffusers, from noise saved beside it. Run:
    .venv-bench/bin/python Tests/Fixtures/make_bits_per_dim.py
"""
import json
import math
import pathlib

import numpy as np
import torch
from diffusers import DDPMScheduler, UNet2DModel

here = pathlib.Path(__file__).parent / "tiny-pipeline"
unet = UNet2DModel.from_pretrained(here / "unet").eval()
config = json.loads((here / "scheduler" / "scheduler_config.json").read_text())
scheduler = DDPMScheduler.from_config(config)
betas = scheduler.betas.numpy().astype(np.float64)
abar = scheduler.alphas_cumprod.numpy().astype(np.float64)
T = len(betas)
abar_prev = np.append(1.0, abar[:-1])
posterior_variance = betas * (1 - abar_prev) / (1 - abar)
posterior_log_variance = np.log(np.append(posterior_variance[1], posterior_variance[1:]))
coef_x0 = betas * np.sqrt(abar_prev) / (1 - abar)
coef_xt = (1 - abar_prev) * np.sqrt(1 - betas) / (1 - abar)
assert config["variance_type"] == "fixed_small"
model_log_variance = posterior_log_variance


def normal_kl(m1, lv1, m2, lv2):
    return 0.5 * (-1.0 + lv2 - lv1 + np.exp(lv1 - lv2) + (m1 - m2) ** 2 * np.exp(-lv2))


def cdf(x):
    return 0.5 * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x ** 3)))


def decoder_log_likelihood(x, mean, log_scale):
    centred, inv = x - mean, np.exp(-log_scale)
    plus, minus = cdf(inv * (centred + 1 / 255)), cdf(inv * (centred - 1 / 255))
    return np.where(x < -0.999, np.log(np.maximum(plus, 1e-12)),
                    np.where(x > 0.999, np.log(np.maximum(1 - minus, 1e-12)), np.log(np.maximum(plus - minus, 1e-12))))


rng = np.random.default_rng(0)
x0 = np.round((rng.uniform(-1, 1, (1, 1, 8, 8)) + 1) * 127.5) / 127.5 - 1  # on the 8-bit grid
x0[0, 0, 0, :3] = [-1, 1, -1]  # and the edge bins
x0 = x0.astype(np.float32)
noise = rng.standard_normal((T, 1, 8, 8)).astype(np.float32)
terms = np.zeros(T)
with torch.no_grad():
    for start in range(0, T, 100):
        ts = np.arange(start, start + 100)
        xt = (np.sqrt(abar[ts]).reshape(-1, 1, 1, 1) * x0 + np.sqrt(1 - abar[ts]).reshape(-1, 1, 1, 1) * noise[ts]).astype(np.float32)
        eps = unet(torch.from_numpy(xt), torch.from_numpy(ts)).sample.numpy().astype(np.float64)
        for row, t in enumerate(ts):
            x0_hat = np.clip((xt[row] - np.sqrt(1 - abar[t]) * eps[row]) / np.sqrt(abar[t]), -1, 1)
            mean = coef_x0[t] * x0_hat + coef_xt[t] * xt[row]
            if t == 0:
                terms[t] = -decoder_log_likelihood(x0[0].astype(np.float64), mean, 0.5 * model_log_variance[0]).mean() / math.log(2)
            else:
                true_mean = coef_x0[t] * x0[0] + coef_xt[t] * xt[row]
                terms[t] = normal_kl(true_mean, posterior_log_variance[t], mean, model_log_variance[t]).mean() / math.log(2)
prior = normal_kl(np.sqrt(abar[-1]) * x0.astype(np.float64), math.log(1 - abar[-1]), 0.0, 0.0).mean() / math.log(2)
np.save(here / "bpd_x0.npy", x0)
np.save(here / "bpd_noise.npy", noise)
np.save(here / "bpd_terms.npy", terms)
np.save(here / "bpd_prior.npy", np.array([prior]))
print("bits/dim", terms.sum() + prior, "L_0", terms[0], "prior", prior)
