#!/usr/bin/env python3
"""swift-ddpm against PyTorch + diffusers on the same machine, in the same run.

Builds the preset's UNet2DModel in diffusers (the same config that `ddpm bench` uses), times
training steps (forward, MSE loss, backward, AdamW) and gradient-free forward passes on random
data with torch.set_num_threads equal to ours, runs `ddpm bench --json` for the same preset,
batch and step count, and prints both and the ratios (ours / PyTorch; above 1 is faster,
below 1 uses less memory). The two alternate for --rounds rounds and the medians are shown, since
this VM's speed drifts by +-20% over minutes: each round's ratio compares runs seconds apart.

PyTorch and diffusers are optional dependencies of this script only:
    python3 -m venv .venv-bench && .venv-bench/bin/pip install torch diffusers
    .venv-bench/bin/python benchmarks/compare.py --preset fmnist --batch-size 64
"""
import argparse, json, os, resource, statistics, subprocess, sys, time

PRESETS = {
    "tiny": dict(sample_size=28, in_channels=1, out_channels=1, block_out_channels=(16, 32), layers_per_block=1,
                 norm_num_groups=8, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                 up_block_types=("AttnUpBlock2D", "UpBlock2D"), attention_head_dim=8),
    "fmnist": dict(sample_size=28, in_channels=1, out_channels=1, block_out_channels=(32, 64, 128), layers_per_block=2,
                   norm_num_groups=8, down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
                   up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"), attention_head_dim=8),
    "cifar10": dict(sample_size=32, in_channels=3, out_channels=3, block_out_channels=(128, 256, 256, 256), layers_per_block=2,
                    norm_num_groups=32, norm_eps=1e-6, attention_head_dim=None, flip_sin_to_cos=False, freq_shift=1,
                    downsample_padding=0, dropout=0.1,
                    down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
                    up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D")),
}


def bench_torch(preset, batch, steps, threads):
    import torch
    from diffusers import UNet2DModel
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = UNet2DModel(**PRESETS[preset])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    c = PRESETS[preset]
    x = torch.randn(batch, c["in_channels"], c["sample_size"], c["sample_size"])
    target = torch.randn_like(x)
    t = torch.randint(0, 1000, (batch,))

    def train_step():
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.mse_loss(model(x, t).sample, target)
        loss.backward()
        opt.step()

    def forward():
        with torch.no_grad():
            model(x, t)

    model.train()
    train_step()
    start = time.perf_counter()
    for _ in range(steps):
        train_step()
    train = (time.perf_counter() - start) / steps
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    model.eval()
    forward()
    start = time.perf_counter()
    for _ in range(2 * steps):
        forward()
    fwd = (time.perf_counter() - start) / (2 * steps)
    return dict(train_images_per_s=batch / train, forward_images_per_s=batch / fwd, peak_rss_mb=rss,
                parameters=sum(p.numel() for p in model.parameters()))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="fmnist", choices=sorted(PRESETS))
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--torch-json", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--ddpm", default=os.path.join(os.path.dirname(__file__), "..", ".build", "release", "ddpm"))
    args = ap.parse_args()

    if args.torch_json:
        print(json.dumps(bench_torch(args.preset, args.batch_size, args.steps, args.threads)))
        return

    # each side in a fresh process started from this small one: a child's peak RSS counts its
    # parent's at fork, so PyTorch must not run in this process
    def run_json(command):
        out = subprocess.run(command, check=True, capture_output=True, text=True,
                             env=dict(os.environ, OPENBLAS_NUM_THREADS=str(args.threads)))
        return json.loads(out.stdout.strip().splitlines()[-1])

    def bench_ours():
        return run_json([args.ddpm, "bench", "--preset", args.preset, "--batch-size", str(args.batch_size),
                         "--steps", str(args.steps), "--json"])

    def bench_theirs():
        return run_json([sys.executable, __file__, "--torch-json", "--preset", args.preset, "--batch-size",
                         str(args.batch_size), "--steps", str(args.steps), "--threads", str(args.threads)])

    keys = ("train_images_per_s", "forward_images_per_s", "peak_rss_mb")
    rounds = []
    for r in range(args.rounds):
        pair = (bench_ours(), bench_theirs())
        rounds.append(pair)
        print(f"round {r + 1}: " + ", ".join(f"{k} {pair[0][k]:.1f} / {pair[1][k]:.1f} = {pair[0][k] / pair[1][k]:.2f}x"
                                             for k in keys), flush=True)
    ours, theirs = dict(rounds[0][0]), dict(rounds[0][1])
    ratio = {}
    for k in keys:
        ours[k] = statistics.median(o[k] for o, _ in rounds)
        theirs[k] = statistics.median(t[k] for _, t in rounds)
        ratio[k] = statistics.median(o[k] / t[k] for o, t in rounds)
    if theirs["parameters"] != ours["parameters"]:
        sys.exit(f"parameter counts differ: PyTorch {theirs['parameters']}, ours {ours['parameters']}")

    flops_train, flops_fwd = ours["train_gflop_per_image"], ours["forward_gflop_per_image"]
    peak = ours["peak_gflops"]
    print(f"{args.preset}, batch {args.batch_size}, {args.threads} threads, {args.steps} timed training steps, "
          f"medians of {args.rounds} rounds; {ours['parameters']:,} parameters")
    print(f"{'':24}{'swift-ddpm':>14}{'PyTorch':>14}{'ratio':>9}")
    for name, k in [("training images/s", keys[0]), ("forward images/s", keys[1]), ("peak RSS MB", keys[2])]:
        print(f"{name:24}{ours[k]:14.2f}{theirs[k]:14.2f}{ratio[k]:8.2f}x")
    for name, rate, gf in [("training", "train_images_per_s", flops_train), ("forward", "forward_images_per_s", flops_fwd)]:
        a, b = ours[rate] * gf, theirs[rate] * gf
        print(f"{name + ' GFLOP/s':24}{a:14.1f}{b:14.1f}   ({100 * a / peak:.0f}% vs {100 * b / peak:.0f}% of {peak:.0f})")


if __name__ == "__main__":
    main()
