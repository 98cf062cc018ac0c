import json, sys, torch
from pathlib import Path
from mico_chat.api import ChatModel
torch.set_num_threads(2)
model_dir, world, n = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
cm = ChatModel.load(model_dir)
rows = [json.loads(l) for l in open(world / "world.jsonl")][:n]
F, col = [], []
for r in rows:
    content = [{"type": "video", "video": str(world / r["media"]["video"])}, {"type": "text", "text": "x"}]
    batch = cm._inputs([[{"role": "user", "content": content}]])
    with torch.no_grad():
        enc = cm.model.encoder({"video": batch["media"]["video"]})["video"][0]  # (L, D)
    F.append(enc); col.append(r["scene"]["colour"])
X = torch.stack(F)  # (n, L, D)
cls = X.reshape(n, 8, -1, X.shape[-1])[:, :, 0].mean(1)  # (n, D) mean frame CLS
std = cls.std(0)
print("per-dim std across clips: min %.3f median %.3f max %.3f" % (std.min(), std.median(), std.max()))
print("token abs mean per dim: top5", X.abs().mean((0, 1)).topk(5).values.tolist(), "median", X.abs().mean((0,1)).median().item())
vals = sorted(set(col)); y = torch.tensor([vals.index(c) for c in col])
means = torch.stack([cls[y == k].mean(0) for k in range(len(vals))])
between = means.var(0); within = torch.stack([cls[y == k].var(0) for k in range(len(vals))]).mean(0)
ratio = between / (within + 1e-8)
top = ratio.topk(10)
print("colour F-ratio top dims", [round(v, 1) for v in top.values.tolist()])
print("std of those dims", [round(std[i].item(), 3) for i in top.indices.tolist()])
print("energy share of colour-between-variance:", (between.sum() / cls.var(0).sum()).item())
