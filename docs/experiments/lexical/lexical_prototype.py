"""Prototype: lexical alignment of connectors (no LLM forward): media tokens -> near the LLM's word embeddings of the caption."""
import json, sys, time, torch, random
from pathlib import Path
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer
from mico_chat.builder import build_model
from mico_chat.weights import resolve_model_path
from mico_chat.processing import MediaItem
from mico_chat.modality import Modality
from mico_chat.preprocess import MediaSettings
torch.set_num_threads(2); torch.manual_seed(0)
world, enc_dir, out, n, steps = Path(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
path = resolve_model_path("smollm2-135m-instruct")
llm = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32); tok = AutoTokenizer.from_pretrained(path)
norm = {"type": "mlp2x_gelu", "tokens": "all", "out_norm": True}
conns = {"video": {**norm, "pool": 2}, "audio": {**norm, "pool": 4}, "image": {**norm, "pool": 4}, "depth": {**norm, "pool": 4}}
model, proc = build_model(llm, tokenizer=tok, encoder={"pretrained": enc_dir}, connectors=conns, chat_template="llm",
                          settings=MediaSettings(num_frames=8, video_audio=True, audio_clips=1), llm_name="smollm2-135m-instruct")
model.eval()
STOP = set("a an the on in of to at while and is are with its it there one two three four once twice times".split())
emb = model.get_input_embeddings().weight.detach()
def words(text):
    ids = [i for w in text.replace(",", " ").replace(".", " ").split() if w.lower() not in STOP
           for i in tok.encode(" " + w.lower(), add_special_tokens=False)]
    return emb[ids]
rows = [json.loads(l) for l in open(world / "world.jsonl")][:n]
caps = {json.loads(l)["id"]: json.loads(l)["captions"] for l in open(world / "captions.jsonl")}
from collections import Counter
df = Counter(w for c in caps.values() for k in ("vision", "audio") for w in set(c[k].lower().replace(",", " ").replace(".", " ").split()))
STOP |= {w for w, k in df.items() if k > 0.4 * len(caps)}
print("dropped words", sorted(w for w in STOP if w in df))
t0 = time.time(); data = []
with torch.no_grad():
    for r in rows:
        cap = caps[r["id"]]
        for mod, src, text in (("video", r["media"]["video"], cap["vision"]), ("audio", r["media"]["video"], cap["audio"]),
                               ("image", r["media"]["image"], cap["vision"]), ("depth", r["media"]["depth"], cap["vision"])):
            t = proc.load_media([MediaItem(Modality(mod), str(world / src))])[0]
            f = model.encoder({Modality(mod): t[None]})[Modality(mod)]
            data.append((mod, f, words(text)))
print("features", len(data), "in", round(time.time() - t0), "s", flush=True)
params = [p for p in model.connectors.parameters()]
opt = torch.optim.AdamW(params, lr=2e-3, weight_decay=0.0)
W = F.normalize(emb, dim=-1)
for step in range(steps):
    batch = random.sample(data, 64); loss = 0
    for mod, f, wv in batch:
        m = model.encode_media(None, {mod: f})[Modality(mod)][0]  # (M, d)
        sim = F.normalize(m, dim=-1) @ F.normalize(wv, dim=-1).T  # (M, w)
        loss = loss + (1 - sim.max(0).values).mean() + (1 - sim.max(1).values).mean()
    loss = loss / len(batch)
    opt.zero_grad(); loss.backward(); opt.step()
    if step % 50 == 0 or step == steps - 1:
        # what word does each media token sit nearest to (vocabulary-wide)?
        mod, f, wv = data[0]
        with torch.no_grad():
            m = model.encode_media(None, {mod: f})[Modality(mod)][0]
            near = (F.normalize(m, dim=-1) @ W.T).argmax(-1)
        print(step, round(loss.item(), 4), "nearest words (clip 0 video):", tok.decode(near[:12]).replace("\n", " "), flush=True)
model.save_pretrained(out); proc.save_pretrained(out)
print("saved", out)
