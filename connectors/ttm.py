"""Token Turing Machine over time-ordered snippets: the memory-based Combiner of Partition and Conquer.

Section 3.2 of "Partition and Conquer" (its "Token Turing Machine Combiner", eqs. 3-6, after Ryoo et
al., 2023). A memory ``M_t`` of ``memory_tokens`` tokens is carried from snippet to snippet; for
snippet ``t`` with input tokens ``c_t``:

- ``z_t = Read(c_t, M_t)``: ``read_tokens`` tokens pooled out of ``[M_t; c_t]`` (eq. 3);
- ``o_t = Process(z_t)``: a small pre-norm Transformer over those tokens (eq. 4);
- ``M_{t+1} = Write(M_t, o_t, c_t)``: ``memory_tokens`` tokens pooled out of ``[M_t; o_t; c_t]`` (eq. 5);
- ``x_t = Output(o_t)``: ``output_tokens`` tokens pooled out of ``o_t`` (eq. 6).

Read, Write and Output are TokenLearner poolings (Ryoo et al., 2021), as the paper implements them
(its appendix A.2 says an MLP produces the outputs; section 3.2 says TokenLearner; this follows
section 3.2). ``x_t`` depends on ``c_1..c_t`` only, through the memory, so the TTM is causal by
construction; the processor sees ``read_tokens`` tokens per step, not the whole history, so its
cost per snippet does not grow with ``t``.
"""

from __future__ import annotations

import torch
from torch import nn

MEMORY, PROCESSED = 0, 1  # rows of TokenTuringMachine.role_embedding


class TokenLearner(nn.Module):
    """Pool a set of tokens into ``num_outputs`` tokens with learned, input-dependent weights.

    Each output ``i`` is a convex combination of the input tokens, ``sum_j w_ij x_j``, with weights
    ``w_i = softmax_j(alpha_i(x_j))`` from a small MLP (LayerNorm, Linear, GELU, Linear); the
    TokenLearner of Ryoo et al. (2021) as the Token Turing Machine uses it. Tokens that are
    ``False`` in ``mask`` get zero weight.
    """

    def __init__(self, dim: int, num_outputs: int, hidden: int | None = None):
        super().__init__()
        hidden = hidden or dim
        self.num_outputs = num_outputs
        self.score = nn.Sequential(
            nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, num_outputs)
        )  # fmt: skip

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``tokens (N, L, D)``, ``mask (N, L)`` (``True``: a real token; every row needs one)
        -> ``(N, num_outputs, D)``."""
        logits = self.score(tokens).float()  # (N, L, S)
        if mask is not None:
            logits = logits.masked_fill(~mask.unsqueeze(-1), float("-inf"))
        weights = logits.softmax(dim=1).to(tokens.dtype)  # (N, L, S), sums to 1 over L
        return weights.transpose(1, 2) @ tokens  # (N, S, D)


class TokenTuringMachine(nn.Module):
    """Read / process / write over snippets (see the module docstring).

    Args:
        dim: token width (the Combiner's: the encoder's hidden size).
        memory_tokens: tokens in the memory (the paper: 256).
        read_tokens: tokens the processor reads per snippet (the paper: 512).
        output_tokens: m, tokens emitted per snippet (the paper: 32).
        depth, heads, mlp_ratio: the processor Transformer (the paper: 2 layers).
    """

    def __init__(
        self, dim: int, memory_tokens: int, read_tokens: int, output_tokens: int, depth: int, heads: int, mlp_ratio: int
    ):
        super().__init__()
        self.memory = nn.Parameter(0.02 * torch.randn(memory_tokens, dim))  # (M, D): M_0
        # Marks memory and processed tokens apart from the inputs (which carry their own type
        # embedding) where Read and Write pool over them together.
        self.role_embedding = nn.Parameter(0.02 * torch.randn(2, dim))
        self.read = TokenLearner(dim, read_tokens)
        self.write = TokenLearner(dim, memory_tokens)
        self.output = TokenLearner(dim, output_tokens)
        layer = nn.TransformerEncoderLayer(
            dim, heads, mlp_ratio * dim, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )  # fmt: skip
        self.process = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)

    def step(
        self, memory: torch.Tensor, inputs: torch.Tensor, present: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One snippet: ``memory (N, M, D)``, ``inputs (N, L, D)`` with ``present (N, L)`` (``False``:
        padding) -> (``x_t (N, m, D)``, ``M_{t+1} (N, M, D)``)."""
        n, num_memory = memory.shape[:2]
        memory_in = memory + self.role_embedding[MEMORY]
        keep = torch.ones(n, num_memory, dtype=torch.bool, device=memory.device)
        read = self.read(torch.cat([memory_in, inputs], dim=1), torch.cat([keep, present], dim=1))  # (N, R, D)
        processed = self.process(read)  # (N, R, D)
        out = self.output(processed)  # (N, m, D)
        keep_processed = torch.ones(n, processed.shape[1], dtype=torch.bool, device=memory.device)
        pool = torch.cat([memory_in, processed + self.role_embedding[PROCESSED], inputs], dim=1)
        written = self.write(pool, torch.cat([keep, keep_processed, present], dim=1))  # (N, M, D)
        return out, written

    def forward(self, snippets: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """``snippets (N, T, L, D)``, each snippet's tokens padded to ``L``; ``present (N, T, L)``
        (``False``: padding; a snippet may have none) -> ``(N, T*m, D)``, snippet-major."""
        memory = self.memory.to(snippets.dtype).expand(snippets.shape[0], -1, -1)
        outputs = []
        for t in range(snippets.shape[1]):
            out, memory = self.step(memory, snippets[:, t], present[:, t])
            outputs.append(out)
        return torch.cat(outputs, dim=1)


def group_by_snippet(
    tokens: torch.Tensor, snippets: torch.Tensor, num_snippets: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gather each snippet's tokens into its own padded row.

    ``tokens (N, L, D)``, ``snippets (N, L)`` (``-1``: padding, dropped) -> ``(N, T, L_max, D)`` and
    ``present (N, T, L_max)``, where ``L_max`` is the most tokens any snippet of any item holds
    (at least 1). Within a snippet the tokens keep their order in ``tokens``.
    """
    n, length, dim = tokens.shape
    key = torch.where(snippets < 0, num_snippets, snippets)  # padding sorts last
    order = torch.argsort(key, dim=1, stable=True)  # (N, L)
    sorted_key = key.gather(1, order)
    counts = nn.functional.one_hot(key, num_snippets + 1).sum(dim=1)  # (N, T+1)
    starts = counts.cumsum(dim=1) - counts  # (N, T+1): first sorted position of each snippet
    slot = torch.arange(length, device=tokens.device) - starts.gather(1, sorted_key)  # (N, L)
    widest = max(int(counts[:, :num_snippets].max()), 1)
    grouped = tokens.new_zeros(n, num_snippets + 1, max(widest, length), dim)
    present = torch.zeros(n, num_snippets + 1, max(widest, length), dtype=torch.bool, device=tokens.device)
    rows = torch.arange(n, device=tokens.device).unsqueeze(1).expand(-1, length)
    grouped[rows, sorted_key, slot] = tokens.gather(1, order.unsqueeze(-1).expand(-1, -1, dim))
    present[rows, sorted_key, slot] = True
    return grouped[:, :num_snippets, :widest], present[:, :num_snippets, :widest]
