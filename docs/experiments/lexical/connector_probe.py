"""Linear probe (colour, shape, count, motion, sound) on connector outputs of a chat model, train clips -> split."""
import json, sys, torch
from pathlib import Path
from mico_chat.api import ChatModel
torch.set_num_threads(2)
model_dir, world, n = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
cm = ChatModel.load(model_dir)
rows = [json.loads(l) for l in open(world / "world.jsonl")][:n]
X, Y = [], {k: [] for k in ("colour", "shape", "count", "motion", "background")}
emb_norms = []
for r in rows:
    vid = str(world / r["media"]["video"]) if isinstance(r.get("media"), dict) else None
    if vid is None:
        vid = str(world / [m for m in r["media"] if m.get("modality")=="video"][0]["path"])
    content = [{"type": "video", "video": vid}, {"type": "text", "text": "x"}]
    batch = cm._inputs([[{"role": "user", "content": content}]])
    with torch.no_grad():
        proj = cm.model.encode_media({"video": batch["media"]["video"]})
    v = proj["video"][0]  # (T, d)
    emb_norms.append(v.norm(dim=-1).mean().item())
    X.append(torch.cat([v.mean(0), v.reshape(8, -1, v.shape[-1])[:, 0].mean(0)]))
    sc = r["scene"]
    for k in Y: Y[k].append(str(sc[k]))
X = torch.stack(X); X = (X - X.mean(0)) / (X.std(0) + 1e-6)
print("connector token norm", sum(emb_norms)/len(emb_norms), "text emb norm", cm.model.get_input_embeddings().weight.norm(dim=-1).mean().item())
ntr = int(0.7 * len(X))
for k, ys in Y.items():
    vals = sorted(set(ys)); y = torch.tensor([vals.index(v) for v in ys])
    W = torch.zeros(X.shape[1], len(vals), requires_grad=True); b = torch.zeros(len(vals), requires_grad=True)
    opt = torch.optim.LBFGS([W, b], max_iter=200)
    def closure():
        opt.zero_grad(); l = torch.nn.functional.cross_entropy(X[:ntr] @ W + b, y[:ntr]) + 1e-3 * W.pow(2).sum(); l.backward(); return l
    opt.step(closure)
    acc = ((X[ntr:] @ W + b).argmax(1) == y[ntr:]).float().mean().item()
    print(k, "probe acc on connector outputs", round(acc, 2), "classes", len(vals))
