"""Full sampling loops of diffusers' fast schedulers on the tiny pipeline's U-Net, from fixed noise:
DPMSolverMultistepScheduler (dpmsolver++, order 2), EulerDiscreteScheduler, EulerAncestralDiscreteScheduler
and HeunDiscreteScheduler, for 10 and 25 steps, with and without Karras sigmas (not Euler ancestral,
which has none), epsilon and v prediction, each with its config made two ways: from the tiny
folder's DDPMScheduler config (`from_config`, which carries its keys over, leading spacing and all)
and from the class's own defaults. Euler ancestral's fresh noise is recorded as the loop draws it.
Writes fast-samplers/loops.safetensors. Run:
    .venv-bench/bin/python Tests/Fixtures/make_fast_samplers.py
"""
import pathlib

import numpy as np
import torch
from diffusers import (DDPMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler,
                       EulerDiscreteScheduler, HeunDiscreteScheduler, UNet2DModel)
from diffusers.schedulers import scheduling_euler_ancestral_discrete as euler_a_module
from safetensors.numpy import save_file

here = pathlib.Path(__file__).parent
out = here / "fast-samplers"
out.mkdir(exist_ok=True)
unet = UNet2DModel.from_pretrained(here / "tiny-pipeline" / "unet").eval()
folder_config = DDPMScheduler.from_pretrained(here / "tiny-pipeline" / "scheduler").config
noise = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(11))

classes = {"dpm++": DPMSolverMultistepScheduler, "euler": EulerDiscreteScheduler,
           "euler-a": EulerAncestralDiscreteScheduler, "heun": HeunDiscreteScheduler}
drawn = []
original_randn = euler_a_module.randn_tensor


def recording_randn(*args, **kwargs):
    z = original_randn(*args, **kwargs)
    drawn.append(z.clone())
    return z


euler_a_module.randn_tensor = recording_randn
tensors = {"noise": noise.numpy()}
for name, cls in classes.items():
    for source in ["folder", "default"]:
        for steps in [10, 25]:
            for karras in ([False] if name == "euler-a" else [False, True]):
                for prediction in ["epsilon", "v_prediction"]:
                    options = {"prediction_type": prediction}
                    if karras:
                        options["use_karras_sigmas"] = True
                    scheduler = cls.from_config(folder_config, **options) if source == "folder" else cls(**options)
                    scheduler.set_timesteps(steps)
                    drawn.clear()
                    x = noise * scheduler.init_noise_sigma
                    with torch.no_grad():
                        for t in scheduler.timesteps:
                            model_input = scheduler.scale_model_input(x, t)
                            output = unet(model_input, t).sample
                            extra = {"generator": torch.Generator().manual_seed(5)} if name == "euler-a" else {}
                            x = scheduler.step(output, t, x, **extra).prev_sample
                    key = f"{name}_{source}_{steps}_{'karras' if karras else 'plain'}_{prediction}"
                    tensors[key + "/sample"] = x.numpy()
                    tensors[key + "/timesteps"] = scheduler.timesteps.numpy().astype(np.float32)
                    tensors[key + "/sigmas"] = np.asarray(scheduler.sigmas, dtype=np.float32)
                    tensors[key + "/init_noise_sigma"] = np.array([float(scheduler.init_noise_sigma)], dtype=np.float32)
                    if drawn:
                        tensors[key + "/drawn"] = torch.stack(drawn).numpy()
save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, out / "loops.safetensors")
# the configs a DPM-Solver++ folder holds, as diffusers writes them (lambda_min_clipped: -Infinity)
DPMSolverMultistepScheduler.from_config(folder_config).save_config(out / "dpm-scheduler")
EulerDiscreteScheduler(use_karras_sigmas=True).save_config(out / "euler-scheduler")
print("written", len(tensors), "arrays")
