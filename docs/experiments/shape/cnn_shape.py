"""Is colour an anti-cue for shape on the held-out split? A small CNN reads shape from one frame.

    python docs/experiments/shape/cnn_shape.py DATA_DIR MODE     # MODE: colour | gray | mix

DATA_DIR holds train/ and heldout/ worlds (a pipeline run's data/). The CNN (3 conv layers, global
max pool) is trained on frame 2 of 4 of the first 1,200 training clips, 400 steps of 32, and scored
on the 100 held-out clips in colour and in grey. ``gray`` trains on grey frames only, ``mix`` turns
half of each batch grey.
"""

import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

from frames import frames, gray

SHAPES = ["circle", "square", "triangle", "cross"]


def main(data: str, mode: str) -> None:
    torch.manual_seed(0)
    x, y = frames(f"{data}/train", 1200)
    xt, yt = frames(f"{data}/heldout", 100)
    label = torch.tensor([SHAPES.index(t["shape"]) for t in y])
    label_t = torch.tensor([SHAPES.index(t["shape"]) for t in yt])
    frame, frame_t = x[:, 1], xt[:, 1]
    net = nn.Sequential(
        nn.Conv2d(3, 32, 3, 1, 1), nn.GELU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, 1, 1), nn.GELU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 128, 3, 1, 1), nn.GELU(), nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(128, 4),
    )  # fmt: skip
    opt = torch.optim.AdamW(net.parameters(), 1e-3)
    for _ in range(400):
        idx = torch.randint(0, len(frame), (32,))
        batch = frame[idx]
        if mode == "gray":
            batch = gray(batch)
        elif mode == "mix":
            batch = torch.where((torch.rand(32) < 0.5)[:, None, None, None], gray(batch), batch)
        loss = F.cross_entropy(net(batch), label[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        colour = (net(frame_t).argmax(1) == label_t).float().mean().item()
        grey = (net(gray(frame_t)).argmax(1) == label_t).float().mean().item()
    print(f"{mode}: train loss {loss.item():.2f}, held-out shape accuracy {colour:.2f} (colour frames), {grey:.2f} (grey)")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
