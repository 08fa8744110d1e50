"""Class-conditional UNet2DModel fixtures, made with diffusers (0.42.1 on torch 2.15, CPU, float32).

For each class_embed_type diffusers computes from integer labels (null: an embedding table;
"timestep": the label through the sinusoidal projection and its own MLP) this writes a DDPMPipeline
folder with `id2label` in model_index.json (the DiT convention) and one forward pass with labels,
the last label the null one. Run: python Tests/Fixtures/make_class_conditional.py
"""
import json
import pathlib

import numpy as np
import torch
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

here = pathlib.Path(__file__).parent
names = ["circle", "square", "triangle"]  # 3 classes + the null label = 4 rows

for folder, embed_type in [("tiny-class-table", None), ("tiny-class-timestep", "timestep")]:
    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, layers_per_block=1, block_out_channels=(8, 16),
                       norm_num_groups=4, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D"), num_class_embeds=len(names) + 1,
                       class_embed_type=embed_type)
    with torch.no_grad():  # move every weight off its initial value, so that a zero bias cannot hide a loading mistake
        for p in unet.parameters():
            p.add_(0.05 * torch.randn_like(p))
    out = here / folder
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler()).save_pretrained(out)
    index = json.loads((out / "model_index.json").read_text())
    index["id2label"] = {str(i): n for i, n in enumerate(names)}
    (out / "model_index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    DDPMPipeline.from_pretrained(out)  # still loads with id2label

    torch.manual_seed(1)
    x = torch.randn(4, 1, 8, 8)
    t = torch.tensor([10, 500, 999, 250])
    labels = torch.tensor([0, 2, 1, 3])  # 3: the null label
    with torch.no_grad():
        y = unet(x, t, class_labels=labels).sample
    np.save(out / "forward_input.npy", x.numpy())
    np.save(out / "forward_timesteps.npy", t.numpy())
    np.save(out / "forward_class_labels.npy", labels.numpy())
    np.save(out / "forward_output.npy", y.numpy())
    (out / "CASE.json").write_text(json.dumps({
        "class_embed_type": embed_type, "num_class_embeds": len(names) + 1, "id2label": names,
        "made_with": {"diffusers": __import__("diffusers").__version__, "torch": torch.__version__},
    }, indent=1) + "\n")
    print(folder, "output std", float(y.std()))
