"""diffusers' DDPMScheduler step with variance_type "learned_range" (the model output's second
half the variance values), for fixed model outputs and noise. Run:
    .venv-bench/bin/python Tests/Fixtures/make_learned_range.py
"""
import pathlib

import numpy as np
import torch
from diffusers import DDPMScheduler
from diffusers.utils.torch_utils import randn_tensor

out = pathlib.Path(__file__).parent / "learned-range"
out.mkdir(exist_ok=True)
scheduler = DDPMScheduler(variance_type="learned_range", clip_sample=True)
torch.manual_seed(3)
for t in [999, 500, 1]:
    model_output = torch.randn(2, 2, 4, 4)
    model_output[:, 1:] = torch.rand(2, 1, 4, 4) * 2 - 1  # variance values in [-1, 1]
    sample = torch.randn(2, 1, 4, 4)
    noise = randn_tensor((2, 1, 4, 4), generator=torch.Generator().manual_seed(t))
    prev = scheduler.step(model_output, t, sample, generator=torch.Generator().manual_seed(t)).prev_sample
    for name, value in [("model_output", model_output), ("sample", sample), ("noise", noise), ("prev_sample", prev)]:
        np.save(out / f"t{t}_{name}.npy", value.numpy())
print("written", sorted(p.name for p in out.iterdir()))
