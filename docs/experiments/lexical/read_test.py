"""Does the chat model read the media? Colour questions: answer prob with true vs another clip's media."""
import json, sys, torch, random
from pathlib import Path
from mico_chat.api import ChatModel
torch.set_num_threads(2)
model_dir, world = sys.argv[1], Path(sys.argv[2])
cm = ChatModel.load(model_dir)
recs = [json.loads(l) for l in open(world / "records.jsonl")]
TOPIC = sys.argv[3] if len(sys.argv) > 3 else "colour"
col = [r for r in recs if r["meta"].get("topic") == TOPIC and r["meta"].get("form") == "open" and r["meta"].get("view")=="video"][:40]
print("items", len(col))
COL = {"colour": ["red", "green", "blue", "yellow", "purple", "orange"], "background": ["black", "gray", "white"], "direction+pitch": ["left", "right", "up", "down", "still"]}[TOPIC]
tok = cm.processor.tokenizer
ids = [tok.encode(c, add_special_tokens=False)[0] for c in COL]
ids_cap = [tok.encode(c.capitalize(), add_special_tokens=False)[0] for c in COL]
def conv(r, media_from):
    content = []
    for m in media_from["media"]:
        content.append({"type": m["modality"], m["modality"]: str(world / m["path"])})
    q = r["messages"][0]["content"].split("\n", 2)[-1]
    content.append({"type": "text", "text": q})
    return [{"role": "user", "content": content}]
random.seed(0)
res = {"true": 0, "swap": 0, "swap_follows_media": 0}
emb_norm = cm.model.get_input_embeddings().weight.norm(dim=-1).mean().item()
for i, r in enumerate(col):
    other = col[(i + 7) % len(col)]
    for kind, src in (("true", r), ("swap", other)):
        batch = cm._inputs([conv(r, src)])
        with torch.no_grad():
            out = cm.model(**batch)
        p = torch.maximum(out.logits[0, -1, ids], out.logits[0, -1, ids_cap])
        pred = COL[int(p.argmax())]
        if kind == "true":
            res["true"] += pred == r["meta"]["answer"]
        else:
            res["swap"] += pred == r["meta"]["answer"]
            res["swap_follows_media"] += pred == other["meta"]["answer"]
print(res, "of", len(col))
# connector output norms vs text embeddings
batch = cm._inputs([conv(col[0], col[0])])
with torch.no_grad():
    feats = cm.model.encode_media(batch["media"]) if hasattr(cm.model, "encode_media") else None
print("text emb norm", emb_norm)
