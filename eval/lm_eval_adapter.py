"""MiCo-Chat as an lm-eval (0.4.x) model, so text suites such as MMLU run through lm-eval's own
runner on local task files, with no network.

Importing this module registers the model as ``mico-chat`` in lm-eval's registry:

    from mico_chat.eval.lm_eval_adapter import run_lm_eval
    results = run_lm_eval(model="default", tasks=["my_mmlu"], include_path=Path("tasks/"))

or ``mico-chat eval lm-eval --tasks my_mmlu --include-path tasks/``. Task YAMLs must name their
local data with absolute paths (``dataset_path: json``, ``dataset_kwargs: {data_files: ...}``);
generation tasks should strip leading whitespace (a ``regex`` filter) before exact matching.

The model is a :class:`mico_chat.ChatModel`; lm-eval's text requests go to its LLM through the
MiCo-Chat model (no media), with the same tokenizer, end-of-sequence tokens and suppressed
placeholder tokens as ``ChatModel.generate``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
from tqdm.auto import tqdm

DEFAULT_MAX_LENGTH = 2048


@register_model("mico-chat", "mico_chat")
class MiCoChatLM(TemplateLM):
    """lm-eval's model interface (loglikelihood, rolling loglikelihood, generate_until) over a ChatModel.

    Args:
        pretrained: preset name or saved MiCo-Chat folder (ignored when ``chat`` is given).
        llm: for presets, a local LLM folder to use instead of the preset's.
        chat: an already loaded :class:`mico_chat.ChatModel`.
        batch_size: sequences per forward pass.
        max_length: context window in tokens (default: the LLM's, at most 2048).
    """

    def __init__(
        self,
        pretrained: str = "default",
        llm: str | None = None,
        device: str | None = None,
        dtype: str | None = None,
        batch_size: int | str = 8,
        max_length: int | None = None,
        chat: Any = None,
    ):
        super().__init__()
        if chat is None:
            from mico_chat.api import ChatModel

            chat = ChatModel.load(pretrained, llm=llm, device=device, dtype=dtype)
        self.chat = chat
        self.tokenizer = chat.processor.tokenizer
        self.batch_size = max(1, int(batch_size)) if str(batch_size).isdigit() else 8
        limit = chat.model.config.context_length or DEFAULT_MAX_LENGTH
        self.max_length = int(max_length or min(limit, DEFAULT_MAX_LENGTH))
        self._device = chat.device

    # ------------------------------------------------------------------ tokens
    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def prefix_token_id(self) -> int:
        bos = self.tokenizer.bos_token_id
        return bos if bos is not None else self.eot_token_id

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs: Any) -> list[int]:
        return self.tokenizer.encode(string, add_special_tokens=bool(add_special_tokens))

    @property
    def tokenizer_name(self) -> str:
        return str(self.chat.name or self.chat.model.config.llm_name_or_path).replace("/", "__")

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        return self.chat.model.config.chat_template if chat_template else ""

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        """Render lm-eval's chat history with the model's own chat template (the processor's)."""
        return self.chat.processor.template.render(chat_history, add_generation_prompt=add_generation_prompt)

    # ------------------------------------------------------------------ scoring
    @torch.no_grad()
    def _logprobs(self, sequences: Sequence[list[int]]) -> list[torch.Tensor]:
        """Log-probabilities ``(L_i, V)`` for each token sequence (right-padded into one batch)."""
        width = max(len(s) for s in sequences)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eot_token_id
        ids = torch.full((len(sequences), width), pad, dtype=torch.long)
        mask = torch.zeros((len(sequences), width), dtype=torch.long)
        for row, seq in enumerate(sequences):
            ids[row, : len(seq)] = torch.tensor(seq)
            mask[row, : len(seq)] = 1
        logits = self.chat.model(input_ids=ids.to(self._device), attention_mask=mask.to(self._device)).logits  # (B, L, V)
        logprobs = F.log_softmax(logits.float(), dim=-1).cpu()
        return [logprobs[row, : len(seq)] for row, seq in enumerate(sequences)]

    def _loglikelihood_tokens(self, requests: list[Any], disable_tqdm: bool = False, **kwargs: Any) -> list[tuple[float, bool]]:
        """Sum of log-probabilities of each continuation given its context, and whether greedy decoding yields it."""
        inputs = []
        for _, context_enc, continuation_enc in requests:
            whole = (context_enc + continuation_enc)[-(self.max_length + 1) :]
            inputs.append((whole[:-1], continuation_enc))
        order = sorted(range(len(inputs)), key=lambda i: -len(inputs[i][0]))  # similar lengths batch together
        results: list[tuple[float, bool] | None] = [None] * len(inputs)
        for start in tqdm(range(0, len(order), self.batch_size), desc="loglikelihood", disable=disable_tqdm):
            batch = order[start : start + self.batch_size]
            logprobs = self._logprobs([inputs[i][0] for i in batch])
            for i, lp in zip(batch, logprobs):
                continuation = inputs[i][1]
                window = lp[-len(continuation) :]  # (C, V): positions predicting the continuation
                target = torch.tensor(continuation).unsqueeze(-1)
                total = float(window.gather(-1, target).sum())
                greedy = bool((window.argmax(dim=-1) == target.squeeze(-1)).all())
                results[i] = (total, greedy)
                self.cache_hook.add_partial("loglikelihood", requests[i][0], (total, greedy))
        return [r for r in results if r is not None]

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        """Whole-text log-likelihood in disjoint windows of the context size (for perplexity)."""
        out = []
        for (text,) in tqdm([r.args for r in requests], desc="loglikelihood_rolling", disable=disable_tqdm):
            windows = [
                make_disjoint_window(w)
                for w in get_rolling_token_windows(
                    token_list=self.tok_encode(text),
                    prefix_token=self.prefix_token_id,
                    max_seq_len=self.max_length,
                    context_len=1,
                )
            ]
            scored = self._loglikelihood_tokens([(None, ctx, cont) for ctx, cont in windows], disable_tqdm=True)
            total = sum(score for score, _ in scored)
            self.cache_hook.add_partial("loglikelihood_rolling", (text,), total)
            out.append(total)
        return out

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        """Greedy (unless the task asks to sample) continuations, cut at the task's stop strings."""
        results: list[str | None] = [None] * len(requests)
        groups: dict[str, list[int]] = {}
        for i, request in enumerate(requests):
            groups.setdefault(repr(sorted(request.args[1].items())), []).append(i)
        bar = tqdm(total=len(requests), desc="generate_until", disable=disable_tqdm)
        for indices in groups.values():
            kwargs = dict(requests[indices[0]].args[1])
            until = kwargs.pop("until", None) or [self.tokenizer.decode([self.eot_token_id])]
            until = [until] if isinstance(until, str) else list(until)
            max_new = int(kwargs.pop("max_gen_toks", 256))
            temperature = float(kwargs.pop("temperature", 0.0) or 0.0)
            do_sample = bool(kwargs.pop("do_sample", False)) and temperature > 0
            for start in range(0, len(indices), self.batch_size):
                batch = indices[start : start + self.batch_size]
                contexts = [self.tok_encode(requests[i].args[0])[-(self.max_length - max_new) :] for i in batch]
                texts = self._generate(contexts, until, max_new, do_sample, temperature)
                for i, text in zip(batch, texts):
                    results[i] = text
                    self.cache_hook.add_partial("generate_until", requests[i].args, text)
                bar.update(len(batch))
        bar.close()
        return [r if r is not None else "" for r in results]

    def _generate(
        self, contexts: list[list[int]], until: list[str], max_new: int, do_sample: bool, temperature: float
    ) -> list[str]:
        width = max(len(c) for c in contexts)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eot_token_id
        ids = torch.full((len(contexts), width), pad, dtype=torch.long)
        mask = torch.zeros((len(contexts), width), dtype=torch.long)
        for row, ctx in enumerate(contexts):  # left padding, as for chat generation
            ids[row, width - len(ctx) :] = torch.tensor(ctx)
            mask[row, width - len(ctx) :] = 1
        sampling = (
            {"do_sample": True, "temperature": temperature}
            if do_sample
            else {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        )
        new_tokens = self.chat.model.generate(
            input_ids=ids.to(self._device),
            attention_mask=mask.to(self._device),
            max_new_tokens=max_new,
            eos_token_id=self.chat.eos_token_ids,
            pad_token_id=pad,
            suppress_tokens=sorted(self.chat.model.config.media_token_ids.values()),
            stop_strings=until,
            tokenizer=self.tokenizer,
            **sampling,
        )  # (B, new)
        texts = []
        for row in new_tokens.tolist():
            ended = [k for k, t in enumerate(row) if t in self.chat.eos_token_ids]
            text = self.tokenizer.decode(row[: ended[0]] if ended else row, skip_special_tokens=True)
            cut = min((text.find(s) for s in until if s and s in text), default=-1)
            texts.append(text[:cut] if cut >= 0 else text)
        return texts


def run_lm_eval(
    *,
    tasks: Sequence[str],
    include_path: Path,
    model: str = "default",
    llm: str | None = None,
    chat: Any = None,
    limit: float | None = None,
    batch_size: int = 8,
    num_fewshot: int | None = None,
    apply_chat_template: bool = False,
    device: str | None = None,
) -> dict[str, Any]:
    """Run lm-eval tasks from ``include_path`` (only those; no built-in tasks, no network).

    Returns lm-eval's results dictionary (``results[task][metric]``, configs, versions).
    """
    # lm-eval and datasets read these when they first load data; the runs are local by design.
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    include_path = Path(include_path)
    if not include_path.is_dir():
        raise FileNotFoundError(f"{include_path}: no such task folder")
    manager = TaskManager(include_path=str(include_path.resolve()), include_defaults=False)
    missing = [t for t in tasks if t not in manager.all_tasks]
    if missing:
        raise FileNotFoundError(f"{include_path}: no task(s) {missing}; found {sorted(manager.all_tasks)}")
    lm = MiCoChatLM(pretrained=model, llm=llm, chat=chat, batch_size=batch_size, device=device)
    results = simple_evaluate(
        model=lm,
        tasks=list(tasks),
        task_manager=manager,
        limit=limit,
        num_fewshot=num_fewshot,
        apply_chat_template=apply_chat_template,
        log_samples=False,
        bootstrap_iters=0,
    )
    if results is None:
        raise RuntimeError("lm-eval returned no results")
    return dict(results)
