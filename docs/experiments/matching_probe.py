"""Can the matching head of a pretrained run still learn? (the probe behind docs/pretraining.md)

Starts from a finished run's ``model/``, keeps the encoder and the text tower's unimodal path
locked, trains the condition adapters, the cross-attention (optionally the whole fusion layers)
and the matching head on the run's own mixture, and reports on held-out omni captions the
matching probability of the right pairs and two AUCs: right pair vs a random medium, and vs the
most similar wrong medium by the contrastive scores.

    cd <the directory the config's runs/ paths are relative to>
    python docs/experiments/matching_probe.py runs/lit-full/model --negatives random --pooling mean --lr 1e-4
"""

from __future__ import annotations

import argparse
import json

import torch
from safetensors.torch import load_file

from eval.retrieval.evaluator import collect_texts
from mico_chat.encoders import parse_group
from mico_chat.pretraining.config import load_config
from mico_chat.pretraining.data import build_media_table
from mico_chat.pretraining.recipe import PretrainRecipe

FUSION = ("condition_adapters", "matching_head", "text.encoder.layer.4.crossattention", "text.encoder.layer.5.crossattention")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a pretraining run's model/ folder")
    parser.add_argument("--config", default="configs/pretrain/tiny_synth.yaml")
    parser.add_argument("--heldout", default="runs/data/heldout/captions.jsonl")
    parser.add_argument("--cache-dir", default="runs/cache")
    parser.add_argument("--negatives", choices=["hard", "random"], default="hard")
    parser.add_argument("--pooling", choices=["cls", "mean"], default="cls")
    parser.add_argument("--unlock-fusion", action="store_true", help="also train layers 4-5 self-attention and FFN")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--items", type=int, default=300)
    args = parser.parse_args()
    torch.set_num_threads(1)

    config = load_config(args.config, ["train.output_dir=/tmp/matching-probe", "eval.records=null"])
    recipe = PretrainRecipe(config, progress=False)
    recipe.setup()
    model = recipe.model
    model.load_state_dict(load_file(f"{args.model}/model.safetensors"))
    model.config.matching_pooling = args.pooling  # the head reads [CLS] or the token mean
    model.config.matching_negatives = args.negatives  # softmax of the similarities, or uniform
    trained = FUSION + (("text.encoder.layer.4.", "text.encoder.layer.5.") if args.unlock_fusion else ())
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith(trained))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr, weight_decay=0.05)

    group = parse_group(["video", "audio"])
    table = build_media_table(
        args.heldout, ["video", "audio"], recipe.settings, model.config.encoder_config,
        cache_dir=args.cache_dir, limit=args.items, progress=False,
    )  # fmt: skip
    texts = collect_texts(table, ["omni"])
    tokens = recipe.tokenizer(
        texts.texts, padding=True, truncation=True, max_length=model.config.max_text_length, return_tensors="pt"
    )
    truth = torch.as_tensor(texts.text_item)

    def evaluate(step: int) -> None:
        model.eval()
        n = len(table)
        with torch.no_grad():
            media, condition = model.embed_media(group, {m.value: table.tensors[m.value][:n].float() for m in group})
            text, lower = model.embed_text(group, tokens["input_ids"], tokens["attention_mask"])
            scores = text @ media.T
            scores[torch.arange(len(truth)), truth] = -9.0
            p = {
                name: model.match_probability(lower, tokens["attention_mask"], condition[items])
                for name, items in (("right", truth), ("random", (truth + 17) % n), ("similar", scores.argmax(1)))
            }
        model.train()
        model.encoder.eval()

        def auc(a: torch.Tensor, b: torch.Tensor) -> float:
            return round(float((a[:, None] > b[None, :]).float().mean()), 3)

        print(json.dumps({
            "step": step, "p_right": round(float(p["right"].mean()), 3),
            "auc_vs_random": auc(p["right"], p["random"]), "auc_vs_similar": auc(p["right"], p["similar"]),
        }), flush=True)  # fmt: skip

    evaluate(0)
    model.train()
    model.encoder.eval()  # locked: no dropout noise, no gradients
    for step in range(args.steps):
        _, batch = recipe.mixture.batch(10_000 + step)  # batches the run itself never drew
        with torch.no_grad():
            encoded = model.encode_group(batch.group, batch.media, sampling_context=batch.sampling_context)
            hidden, lower = model.encode_text(batch.input_ids, batch.attention_mask, batch.sampling_context)
            logits = model.logit_scale.exp() * model.media_features(encoded) @ model.text_features(
                hidden, batch.attention_mask
            ).T
        condition = model.condition_tokens(encoded)
        loss = model._matching_loss(batch, lower, condition, logits, torch.Generator().manual_seed(step))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if (step + 1) % 25 == 0:
            print(json.dumps({"step": step + 1, "matching_loss": round(loss.item(), 3)}), flush=True)
        if (step + 1) % 100 == 0:
            evaluate(step + 1)


if __name__ == "__main__":
    main()
