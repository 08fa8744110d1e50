#!/usr/bin/env python3
"""`ddpm sample` against diffusers' own sampling loop on the same model folder, in the same run.

For each batch size, each round runs our whole process, load and PNG-free .npy output included:
    ddpm sample --model M --sampler ddim --steps S --count B --batch-size B --output tmp.npy
and then diffusers' loop alone (UNet2DModel and DDIMScheduler.from_config of the folder, loaded
beforehand in a separate process and timed from the first step to the last, as a diffusers user's
`for t in scheduler.timesteps: eps = unet(x, t).sample; x = scheduler.step(eps, t, x).prev_sample`
runs under torch.no_grad with torch.set_num_threads(--threads)). Rounds alternate the two, since
this VM's speed drifts by +-20% over minutes; it prints each round, the medians of images/s, and
the median of the per-round ratios (ours / theirs; above 1 is faster).

PyTorch and diffusers are dependencies of this script only:
    python3 -m venv .venv-bench && .venv-bench/bin/pip install torch diffusers
    .venv-bench/bin/python benchmarks/sample_speed.py --batch-sizes 1,16,64
"""
import argparse, json, os, statistics, subprocess, sys, tempfile, time


def diffusers_loop(model, steps, batch, threads, rounds):
    """Seconds per whole loop for `rounds` loops, in this process (started fresh by main)."""
    import torch
    from diffusers import DDIMScheduler, UNet2DModel
    torch.set_num_threads(threads)
    unet = UNet2DModel.from_pretrained(os.path.join(model, "unet")).eval()
    with open(os.path.join(model, "scheduler", "scheduler_config.json")) as f:
        scheduler = DDIMScheduler.from_config(json.load(f))
    c = unet.config
    generator = torch.Generator().manual_seed(0)
    labels = None
    if c.num_class_embeds is not None:
        labels = torch.arange(batch) % (c.num_class_embeds - 1)

    def loop():
        scheduler.set_timesteps(steps)
        x = torch.randn(batch, c.in_channels, c.sample_size, c.sample_size, generator=generator)
        with torch.no_grad():
            for t in scheduler.timesteps:
                eps = unet(x, t, class_labels=labels).sample
                x = scheduler.step(eps, t, x).prev_sample
        return x

    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        loop()
        times.append(time.perf_counter() - start)
    return times


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=os.path.join(os.path.dirname(__file__), "..", "models", "fashion-mnist"))
    ap.add_argument("--batch-sizes", default="1,16,64")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--ddpm", default=os.path.join(os.path.dirname(__file__), "..", ".build", "release", "ddpm"))
    ap.add_argument("--theirs-json", type=int, help=argparse.SUPPRESS)  # batch size: one diffusers loop, JSON out
    args = ap.parse_args()

    if args.theirs_json is not None:
        # one warm-up loop (torch's first call pays for oneDNN's primitive cache), then one timed
        print(json.dumps(diffusers_loop(args.model, args.steps, args.theirs_json, args.threads, 2)[-1]))
        return

    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(args.threads))

    def ours(batch):
        with tempfile.TemporaryDirectory() as tmp:
            command = [args.ddpm, "sample", "--model", args.model, "--sampler", "ddim", "--steps", str(args.steps),
                       "--count", str(batch), "--batch-size", str(batch), "--output", os.path.join(tmp, "x.npy")]
            start = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True, env=env)
            return time.perf_counter() - start

    def theirs(batch):
        out = subprocess.run([sys.executable, __file__, "--theirs-json", str(batch), "--model", args.model,
                              "--steps", str(args.steps), "--threads", str(args.threads)],
                             check=True, capture_output=True, text=True, env=env)
        return json.loads(out.stdout.strip().splitlines()[-1])

    print(f"DDIM-{args.steps} on {os.path.normpath(args.model)}, {args.threads} threads, {args.rounds} alternating rounds")
    print("ours: the whole `ddpm sample` process; diffusers: its loop alone, after a warm-up loop")
    summary = []
    for batch in [int(b) for b in args.batch_sizes.split(",")]:
        pairs = []
        for r in range(args.rounds):
            a, b = ours(batch), theirs(batch)
            pairs.append((batch / a, batch / b))
            print(f"  batch {batch:3d} round {r + 1}: ours {batch / a:7.2f} images/s ({a:6.2f} s), "
                  f"diffusers {batch / b:7.2f} images/s ({b:6.2f} s), {b / a:.2f}x", flush=True)
        summary.append((batch, statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs),
                        statistics.median(p[0] / p[1] for p in pairs)))
    print(f"{'batch':>6}{'swift-ddpm img/s':>18}{'diffusers img/s':>17}{'ratio':>8}")
    for batch, a, b, ratio in summary:
        print(f"{batch:6d}{a:18.2f}{b:17.2f}{ratio:7.2f}x")


if __name__ == "__main__":
    main()
