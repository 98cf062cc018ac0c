"""Can the MiCo ViT learn shape from one frame when told it directly? Supervised shape head.

    python docs/experiments/shape/vit_shape.py DATA_DIR ENCODER_DIR INIT [--conv-stem] [--max-readout]

INIT is ``pretrained`` (the encoder's weights) or ``fresh`` (its config, new weights). The encoder
reads frame 2 of 4 as an image; a linear head on [CLS, mean (or max) patch token] is trained with
it on shape, half of each batch grey, AdamW 3e-4 with 30 warm-up steps, ``--steps`` of 32 (300); printed
every ``--every`` steps (100): the batch loss (chance: ln 4 = 1.39) and held-out shape accuracy.
``--conv-stem`` replaces the 8-pixel patch projection by three stride-2 3x3 convolutions.
"""

import argparse

import torch
import torch.nn as nn
import torch.nn.functional as F

from frames import frames, gray
from mico_chat.encoders import MiCoEncoder, MiCoEncoderConfig
from mico_chat.modality import Modality

SHAPES = ["circle", "square", "triangle", "cross"]


class ConvStem(nn.Module):
    """Early convolutions (Xiao et al. 2021): 3x stride-2 3x3 conv + GroupNorm + GELU, then 1x1."""

    def __init__(self, dim: int):
        super().__init__()
        widths, layers, c = (dim // 4, dim // 2, dim), [], 3
        for w in widths:
            layers += [nn.Conv2d(c, w, 3, 2, 1), nn.GroupNorm(1, w), nn.GELU()]
            c = w
        self.net = nn.Sequential(*layers, nn.Conv2d(dim, dim, 1))

    @property
    def weight(self) -> torch.Tensor:  # the encoder reads its dtype from here
        return self.net[-1].weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("data")
    p.add_argument("encoder")
    p.add_argument("init", choices=["pretrained", "fresh"])
    p.add_argument("--conv-stem", action="store_true")
    p.add_argument("--max-readout", action="store_true")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--every", type=int, default=100)
    args = p.parse_args()
    torch.manual_seed(0)
    x, y = frames(f"{args.data}/train", 1200)
    xt, yt = frames(f"{args.data}/heldout", 100)
    label = torch.tensor([SHAPES.index(t["shape"]) for t in y])
    label_t = torch.tensor([SHAPES.index(t["shape"]) for t in yt])
    frame, frame_t = x[:, 1], xt[:, 1]
    if args.init == "pretrained":
        enc = MiCoEncoder.from_pretrained(args.encoder)
    else:
        enc = MiCoEncoder(MiCoEncoderConfig.from_pretrained(args.encoder))
    dim = enc.config.hidden_size
    if args.conv_stem:
        enc.patch_embeddings["rgb"] = ConvStem(dim)
    head = nn.Linear(2 * dim, 4)
    opt = torch.optim.AdamW([*enc.parameters(), *head.parameters()], 3e-4)

    def features(b: torch.Tensor) -> torch.Tensor:
        out = enc({"image": b})[Modality.IMAGE]  # (N, 1 + P, D)
        patches = out[:, 1:].amax(1) if args.max_readout else out[:, 1:].mean(1)
        return torch.cat([out[:, 0], patches], 1)

    for step in range(1, args.steps + 1):
        idx = torch.randint(0, len(frame), (32,))
        batch = torch.where((torch.rand(32) < 0.5)[:, None, None, None], gray(frame[idx]), frame[idx])
        for group in opt.param_groups:
            group["lr"] = 3e-4 * min(1.0, step / 30)
        loss = F.cross_entropy(head(features(batch)), label[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % args.every == 0:
            enc.eval()
            with torch.no_grad():
                acc = (head(features(frame_t)).argmax(1) == label_t).float().mean().item()
            enc.train()
            print(f"step {step}: batch loss {loss.item():.2f}, held-out shape accuracy {acc:.2f}")


if __name__ == "__main__":
    main()
