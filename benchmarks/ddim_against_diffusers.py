#!/usr/bin/env python3
"""A model folder's DDIM loop in diffusers against `ddpm sample`, from the same noise.

Loads the folder with diffusers (UNet2DModel and DDIMScheduler.from_config of its scheduler),
runs eta-0 DDIM for --steps steps, class-conditional models with --class and --guidance-scale in
diffusers' convention (eps_uncond + W (eps_cond - eps_uncond), the null label the last class row),
runs `ddpm sample` on the same noise, and prints the largest difference. Needs torch and diffusers:
    .venv-bench/bin/python benchmarks/ddim_against_diffusers.py --model models/fashion-mnist
"""
import argparse, json, os, pathlib, subprocess, sys, tempfile

import numpy as np
import torch
from diffusers import DDIMScheduler, UNet2DModel

ap = argparse.ArgumentParser()
ap.add_argument("--model", required=True)
ap.add_argument("--steps", type=int, default=10)
ap.add_argument("--count", type=int, default=4)
ap.add_argument("--class", dest="label", type=int, default=None)
ap.add_argument("--guidance-scale", type=float, default=1.0)
ap.add_argument("--ddpm", default=os.path.join(os.path.dirname(__file__), "..", ".build", "release", "ddpm"))
args = ap.parse_args()

folder = pathlib.Path(args.model)
unet = UNet2DModel.from_pretrained(folder / "unet").eval()
scheduler = DDIMScheduler.from_config(json.loads((folder / "scheduler" / "scheduler_config.json").read_text()))
scheduler.set_timesteps(args.steps)
c = unet.config
noise = torch.randn(args.count, c.in_channels, c.sample_size, c.sample_size, generator=torch.Generator().manual_seed(0))
x = noise.clone()
labels = None
if c.num_class_embeds is not None:
    labels = torch.full((args.count,), args.label if args.label is not None else 0)
    null = torch.full((args.count,), c.num_class_embeds - 1)
with torch.no_grad():
    for t in scheduler.timesteps:
        if labels is None:
            eps = unet(x, t).sample
        elif args.guidance_scale == 1:
            eps = unet(x, t, class_labels=labels).sample
        else:
            both = unet(torch.cat([x, x]), t, class_labels=torch.cat([labels, null])).sample
            cond, uncond = both.chunk(2)
            eps = uncond + args.guidance_scale * (cond - uncond)
        x = scheduler.step(eps, t, x, eta=0.0).prev_sample

with tempfile.TemporaryDirectory() as tmp:
    np.save(f"{tmp}/noise.npy", noise.numpy())
    command = [args.ddpm, "sample", "--model", str(folder), "--sampler", "ddim", "--steps", str(args.steps),
               "--noise", f"{tmp}/noise.npy", "--output", f"{tmp}/ours.npy"]
    if labels is not None:
        command += ["--class", str(int(labels[0])), "--guidance-scale", str(args.guidance_scale)]
    subprocess.run(command, check=True, capture_output=True)
    ours = np.load(f"{tmp}/ours.npy")
difference = float(np.abs(ours - x.numpy()).max())
print(f"{folder}: DDIM {args.steps} steps, {args.count} images"
      + ("" if labels is None else f", class {int(labels[0])}, guidance {args.guidance_scale}")
      + f": largest difference ours vs diffusers {difference:.2e}")
sys.exit(0 if difference < 1e-3 else 1)
