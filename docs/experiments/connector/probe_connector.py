"""Does the chat model's video connector keep what its encoder holds? Probes on both, same clips.

    python docs/experiments/connector/probe_connector.py MODEL_DIR DATA_DIR [--train-limit 600]

MODEL_DIR is a trained chat model (e.g. runs/default-model-7/stage2/model); DATA_DIR holds the
pipeline's ``train`` and ``heldout`` worlds. The same linear probes as ``mico_chat.eval.probes``
(trained on the training clips, scored on the held-out ones) read two things per clip:
the model's encoder output (the probes' readout: mean CLS, mean and max patch token, each
frame's CLS), and its connectors' output, the tokens the LLM receives, read the same way (each
frame's tokens are [CLS, pooled patches], so "CLS" and "patch" keep their meaning).
"""

import argparse

import torch
from torch import nn

from mico_chat.api import ChatModel
from mico_chat.eval.probes import encode_world, format_table, probe_factors
from mico_chat.modality import MediaLayout, Modality


class ConnectorView(nn.Module):
    """The model's encoder followed by its connector, shaped as an encoder for :func:`encode_world`."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.config = model.encoder.config

    def layout(self, modality, num_segments: int) -> MediaLayout:
        enc = self.model.encoder.layout(modality, num_segments)
        pool = self.model.connectors[Modality.parse(modality).value].config.pool or max(enc.grid_h, enc.grid_w)
        return MediaLayout(num_segments, min(enc.grid_h, pool), min(enc.grid_w, pool))

    def forward(self, inputs):
        return self.model.encode_media(media=inputs)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("data")
    p.add_argument("--train-limit", type=int, default=600)
    args = p.parse_args()
    torch.set_num_threads(2)
    chat = ChatModel.load(args.model)
    model = chat.model.eval()
    for name, encoder in (("encoder", model.encoder), ("connector output", ConnectorView(model))):
        with torch.no_grad():
            train = encode_world(encoder, chat.processor, f"{args.data}/train", args.train_limit, progress=False)
            heldout = encode_world(encoder, chat.processor, f"{args.data}/heldout", progress=False)
        print(f"\n## {name} ({args.model})\n")
        print(format_table(probe_factors(train, heldout)))


if __name__ == "__main__":
    main()
