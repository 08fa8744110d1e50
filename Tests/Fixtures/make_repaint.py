"""diffusers' RePaintScheduler (timesteps with jumps, step, undo_step) and RePaintPipeline's loop on
the tiny pipeline's U-Net. The k-th noise the loop draws (counting from 0) is replaced by a formula
a replay can compute: z_k[i] = 1.5 sin(0.7 k + 1.3 i + 0.1) over the flattened tensor.
Writes repaint/repaint.safetensors. Run:
    .venv-bench/bin/python Tests/Fixtures/make_repaint.py
"""
import pathlib

import numpy as np
import torch
from diffusers import RePaintScheduler, UNet2DModel
from diffusers.schedulers import scheduling_repaint
from safetensors.numpy import save_file

here = pathlib.Path(__file__).parent
out = here / "repaint"
out.mkdir(exist_ok=True)
unet = UNet2DModel.from_pretrained(here / "tiny-pipeline" / "unet").eval()
drawn = [0]


def formula_randn(shape, **kwargs):
    k = drawn[0]
    drawn[0] += 1
    i = np.arange(int(np.prod(shape)), dtype=np.float64)
    return torch.from_numpy((1.5 * np.sin(0.7 * k + 1.3 * i + 0.1)).astype(np.float32).reshape(shape))


scheduling_repaint.randn_tensor = formula_randn
generator = torch.Generator().manual_seed(2)
original = torch.rand(2, 1, 8, 8, generator=generator) * 2 - 1
mask = torch.zeros(1, 1, 8, 8)
mask[..., :4, :] = 1  # keep the top half (diffusers: 1 = known)
tensors = {"original": original.numpy(), "mask": mask.numpy()}
for steps, jump_length, jump_n_sample, eta in [(20, 3, 3, 0.0), (25, 5, 2, 0.7), (250, 10, 10, 0.0)]:
    scheduler = RePaintScheduler.from_pretrained(here / "tiny-pipeline" / "scheduler", eta=eta)
    scheduler.set_timesteps(steps, jump_length, jump_n_sample)
    key = f"n{steps}_j{jump_length}_r{jump_n_sample}_eta{eta}"
    tensors[key + "/timesteps"] = scheduler.timesteps.numpy().astype(np.float32)
    if steps == 250:
        continue  # the list only (4,570 entries)
    drawn[0] = 0
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    tensors[key + "/start"] = x.numpy()
    g = torch.Generator().manual_seed(5)
    t_last = scheduler.timesteps[0] + 1
    with torch.no_grad():
        for t in scheduler.timesteps:
            if t < t_last:
                x = scheduler.step(unet(x, t).sample, t, x, original, mask, g).prev_sample
            else:
                x = scheduler.undo_step(x, t_last, g)
            t_last = t
    tensors[key + "/draws"] = np.array([drawn[0]], dtype=np.float32)
    tensors[key + "/result"] = x.numpy()
save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, out / "repaint.safetensors")
print("written", {k: v.shape for k, v in tensors.items()})
