"""Log-likelihood of continuations, number for number as lm-evaluation-harness 0.4.13's HFLM computes it, faster.

The primitive is `loglikelihood(context, continuation) -> (sum of log p(continuation tokens), is_greedy)`.
Sources: lm-eval 0.4.13 as installed from PyPI (file:line):
- tokenization: lm_eval/api/model.py:393-471 (`_encode_pair`, empty context -> prefix token),
  lm_eval/models/huggingface.py:1040-1063 (`tok_encode`), :610-617 (prefix token = bos, else eos);
- scoring: huggingface.py:1329-1572 (`_loglikelihood_tokens`: left truncation to `max_length`, last input token
  dropped, log_softmax over the vocabulary, sum and per-token argmax over the continuation positions);
- max length: lm_eval/models/utils.py:551-592 (config n_positions | max_position_embeddings | n_ctx, else
  tokenizer.model_max_length, else 2048);
- rolling windows (whole-text scoring, wikitext): huggingface.py:1226-1310, lm_eval/utils.py:335-390.

Same numbers, less work than the harness:
- requests whose model input is the same token sequence share one forward pass (MMLU: the four answer letters
  " A".." D" are one token each after the same context, so one forward gives all four);
- inputs that share a context and a long common prefix are packed into one row, the prefix once and each input's
  remainder after it, with an attention mask that lets each remainder see only the prefix and itself and the
  position ids it would have alone (HellaSwag's four endings: SmolLM2 reads 36,533 tokens -> 17,960). Only where
  it saves a quarter of the group's tokens (the first rolling windows of many texts share one prefix token: they
  stay apart), for fp32 models, and once a probe has found the packed log-likelihoods equal to
  the unpacked ones on this model (`_Row`, `packs_exactly`);
- logits are projected only at the scored positions, not at every position of the padded batch, and on the CPU
  a cache-sized tile (`CPU_TILE` positions x vocabulary entries) at a time, each row shifted by one constant
  (the first tile's maxima, subtracted inside the GEMM) and its exps summed tile by tile: no (positions,
  vocabulary) log-softmax is ever written (`hf_ladder.eval.lm_head`);
- tokenization is batched, and each distinct string is encoded once (HellaSwag's four endings share a context);
- inputs are sorted longest first, and on the CPU a forward holds at most `CPU_BATCH_TOKENS` padded tokens, so
  long prompts of different lengths are not padded many at a time to the longest (`_batches`);
- is_greedy keeps each position's first maximal index across the tiles (a later tile replaces it only with a
  strictly larger maximum), which is the harness's `argmax`, ties included;
  whole-text scoring (`loglikelihood_rolling`) asks for no is_greedy at all.
Inputs are right-padded with no attention mask, as in the harness (huggingface.py:1151, 1484), so the scored
positions never see padding (a batch with a packed row has a 4D mask, causal for its other rows). Only which
requests share a batch or a row differs, which may change float rounding (around 1e-7 relative), never the
formulas; tests/test_benchmarks.py checks request by request against lm-eval.
"""

from __future__ import annotations

import math
import os
import weakref
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from hf_ladder.eval.lm_head import LOGIT_BUDGET, head_log_probs, plain_head
from hf_ladder.modeling import context_length, inference, unwrap_peft

CPU_BATCH_TOKENS = 4096  # padded input tokens per forward on the CPU, which gains nothing from wider batches


def prefix_token_id(tokenizer) -> int:
    """Token that conditions a continuation with no context: bos, else eos (huggingface.py:610-617)."""
    return tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id


def tok_encode(tokenizer, texts: list[str], add_special_tokens: bool | None = None) -> list[list[int]]:
    """Token ids of each text, as the harness's `tok_encode` (huggingface.py:1040-1063), in one batched call.

    `add_special_tokens=None` uses the tokenizer's default (our BPE adds bos, GPT-2's adds nothing), except for
    texts that already start with the prefix token's text, which are encoded without special tokens.
    """
    if add_special_tokens is not None:
        return tokenizer(texts, add_special_tokens=add_special_tokens, verbose=False)["input_ids"] if texts else []
    bos_text = tokenizer.decode(prefix_token_id(tokenizer))
    has_bos = [t.startswith(bos_text) for t in texts]
    plain = tok_encode(tokenizer, [t for t, b in zip(texts, has_bos) if not b], add_special_tokens=True)
    raw = tok_encode(tokenizer, [t for t, b in zip(texts, has_bos) if b], add_special_tokens=False)
    plain, raw = iter(plain), iter(raw)
    return [next(raw) if b else next(plain) for b in has_bos]


def encode_pairs(tokenizer, pairs: list[tuple[str, str]]) -> list[tuple[list[int], list[int]]]:
    """(context ids, continuation ids) for each (context, continuation) string pair, as the harness tokenizes.

    Trailing whitespace of the context moves to the continuation; context + continuation is encoded once and
    split at len(encoded context) (api/model.py:393-431). An empty context is replaced by the prefix token,
    or by the continuation's own first token when that already is the prefix token (api/model.py:452-465).

    Raises:
        ValueError: a context that is whitespace only, or a continuation that encodes to no tokens.
    """
    moved = []
    for context, continuation in pairs:
        if context:
            n = len(context) - len(context.rstrip())
            if n:
                context, continuation = context[:-n], context[-n:] + continuation
            if not context:
                raise ValueError(f"context {pairs[len(moved)][0]!r} is whitespace only (the harness asserts on it)")
        moved.append((context, continuation))
    strings = sorted({s for c, k in moved if c for s in (c, c + k)})
    ids = dict(zip(strings, tok_encode(tokenizer, strings)))
    bare = iter(tok_encode(tokenizer, [k for c, k in moved if not c], add_special_tokens=False))
    prefix = prefix_token_id(tokenizer)
    out = []
    for context, continuation in moved:
        if context:
            ctx = ids[context]
            cont = ids[context + continuation][len(ctx):]
        else:
            cont = next(bare)
            ctx, cont = ([prefix], cont) if not cont or cont[0] != prefix else (cont[:1], cont[1:])
        if not cont:
            raise ValueError(f"continuation {continuation!r} (after context {context[-40:]!r}) has no tokens")
        out.append((ctx, cont))
    return out


@dataclass
class _Row:
    """One row of a forward: a single model input (`prefix` = its length), or several inputs that share their
    first `prefix` tokens, packed as the prefix and then each input's remainder (`starts`: input -> where its
    remainder begins in the row). `scored`: the row positions whose next-token log-probs some request reads."""
    tokens: list[int]
    prefix: int
    starts: dict[tuple[int, ...], int]
    scored: list[int] = field(default_factory=list)

    @property
    def packed(self) -> bool:
        return len(self.starts) > 1

    def index(self, inp: tuple[int, ...], j: int) -> int:
        """Where position j of input `inp` lies in the row."""
        return j if j < self.prefix else self.starts[inp] + j - self.prefix


def _single(inp: tuple[int, ...], need: dict) -> _Row:
    return _Row(list(inp), len(inp), {inp: len(inp)}, list(range(len(inp) - need[inp], len(inp))))


def _pack(members: list[tuple[int, ...]], need: dict) -> _Row:
    """The inputs as one row: their longest common prefix, then each one's remainder."""
    prefix = len(os.path.commonprefix(members))
    row = _Row(list(members[0][:prefix]), prefix, {})
    for inp in members:
        row.starts[inp] = len(row.tokens)
        row.tokens += inp[prefix:]
    row.scored = sorted({row.index(inp, j) for inp in members for j in range(len(inp) - need[inp], len(inp))})
    return row


def _rows(need: dict, users: dict, requests: list, window: int | None) -> list[_Row]:
    """Each distinct input alone, except those of one context (the first request's) that pack into a row of at
    most 3/4 of their tokens, none longer than the model's sliding attention `window` (None: no window)."""
    by_context: dict[tuple[int, ...], list[tuple[int, ...]]] = {}
    for inp in need:
        by_context.setdefault(tuple(requests[users[inp][0]][0]), []).append(inp)
    rows = []
    for members in by_context.values():
        row = _pack(members, need) if len(members) > 1 else None
        if row and 4 * len(row.tokens) <= 3 * sum(map(len, members)) and (window is None or
                                                                     max(map(len, members)) <= window):
            rows.append(row)
        else:
            rows += [_single(inp, need) for inp in members]
    return rows


def _batches(rows: list[_Row], batch_size: int, max_scored: int, max_tokens: int | None):
    """Consecutive runs of `rows` (sorted longest first) with <= batch_size rows, <= max_scored scored positions
    and <= max_tokens padded tokens (rows x the first row's length; None: no bound), at least one row each."""
    batch, scored = [], 0
    for row in rows:
        if batch and (len(batch) == batch_size or scored + len(row.scored) > max_scored
                      or max_tokens is not None and (len(batch) + 1) * len(batch[0].tokens) > max_tokens):
            yield batch
            batch, scored = [], 0
        batch.append(row)
        scored += len(row.scored)
    if batch:
        yield batch


def loglikelihood_tokens(model, requests: list[tuple[list[int], list[int]]], max_len: int, batch_size: int = 32,
                         max_scored: int | None = None, progress: bool = False,
                         greedy: bool = True) -> list[tuple[float, bool | None]]:
    """(log-likelihood, is_greedy) of each (context ids, continuation ids), as huggingface.py:1329-1572.

    The model reads `(ctx + cont)[-(max_len + 1):][:-1]` (left-truncated, last token dropped); the last
    len(cont) positions are scored: ll = sum of fp32 log_softmax at the continuation tokens (natural log),
    is_greedy = every continuation token is the argmax of its position (None when `greedy` is False: not
    computed). Distinct inputs (packed where they share a long prefix: `_rows`) are sorted longest first and
    batched by `batch_size` rows and `max_scored` scored positions (default: 4 x LOGIT_BUDGET / vocab, so the
    logits and log-probs take about 1 GB whatever the vocabulary; at least one row per batch), and on the CPU by
    `CPU_BATCH_TOKENS` padded tokens: 5-shot MMLU's prompts of 300-2,048 tokens go a few at a time, not 32 padded
    to the longest (SmolLM2 fp32 on 2 AVX2 cores: 231 s -> 82 s for one question per subject).

    Raises:
        ValueError: an empty context or continuation, or a continuation longer than `max_len`.
    """
    need: dict[tuple[int, ...], int] = {}  # model input -> how many trailing positions some request scores
    users: dict[tuple[int, ...], list[int]] = {}  # model input -> indices of the requests it serves
    for i, (ctx, cont) in enumerate(requests):
        if not ctx or not cont or len(cont) > max_len:
            raise ValueError(f"bad request: {len(ctx)} context and {len(cont)} continuation tokens "
                             f"(need >= 1 and 1..{max_len})")
        inp = tuple((ctx + cont)[-(max_len + 1):][:-1])
        need[inp] = max(need.get(inp, 0), len(cont))
        users.setdefault(inp, []).append(i)
    if max_scored is None:
        max_scored = max(1, 4 * LOGIT_BUDGET // model.get_output_embeddings().out_features)
    out: list[tuple[float, bool]] = [None] * len(requests)
    device = next(model.parameters()).device
    plain = bool(need) and plain_head(model, torch.tensor([min(need, key=len)], device=device))  # shortest input
    rows = _rows(need, users, requests, getattr(getattr(model, "config", None), "sliding_window", None) or None)
    if any(r.packed for r in rows) and not packs_exactly(model, next(r for r in rows if r.packed), need, users,
                                                         requests, plain):
        rows = [_single(inp, need) for inp in need]
    rows.sort(key=lambda r: (-len(r.tokens), r.tokens))
    bar = tqdm(total=len(requests), desc="loglikelihood", unit="req", disable=not progress, leave=False)
    max_tokens = CPU_BATCH_TOKENS if device.type == "cpu" else None
    with inference(model):
        for batch in _batches(rows, batch_size, max_scored, max_tokens):
            _score_batch(model, batch, users, requests, out, device, greedy, plain)
            bar.update(sum(len(users[inp]) for row in batch for inp in row.starts))
    bar.close()
    return out


def _score_batch(model, batch: list[_Row], users, requests, out, device, greedy: bool, plain: bool) -> None:
    """One forward of `loglikelihood_tokens`: fills `out` for every request the batch's rows serve."""
    width = len(batch[0].tokens)
    ids = torch.zeros(len(batch), width, dtype=torch.long)  # (B, T) right-padded with 0
    keep = torch.zeros(len(batch), width, dtype=torch.bool)  # (B, T) scored positions
    for r, row in enumerate(batch):
        ids[r, : len(row.tokens)] = torch.tensor(row.tokens)
        keep[r, row.scored] = True
    gathered = (keep.flatten().cumsum(0) - 1).tolist()  # r * T + position -> its index among the kept positions
    rows, targets, spans = [], [], []  # every (request, continuation token): its scored position and its token
    for r, row in enumerate(batch):
        for inp in row.starts:
            for i in users[inp]:
                cont = requests[i][1]  # this request scores the input's last len(cont) positions
                rows += [gathered[r * width + row.index(inp, j)] for j in range(len(inp) - len(cont), len(inp))]
                targets += cont
                spans.append((i, len(rows) - len(cont), len(rows)))
    rows, targets = torch.tensor(rows, device=device), torch.tensor(targets, device=device)  # (N,), (N,)
    ids, keep = ids.to(device), keep.to(device)
    extra = _packing_inputs(model, batch, width, device) if any(row.packed for row in batch) else {}
    if plain:  # the body once, then the head tile by tile at the scored positions only
        lm = unwrap_peft(model)
        hidden = lm.base_model(input_ids=ids, use_cache=False, **extra).last_hidden_state[keep]  # (n, d)
        picked, is_top = head_log_probs(lm.get_output_embeddings(), hidden, rows, targets, greedy)
    else:  # the model's own logits at the scored positions
        logits = model(input_ids=ids, logits_to_keep=keep, use_cache=False, **extra).logits
        lp = F.log_softmax((logits[keep] if logits.dim() == 3 else logits).float(), dim=-1)  # (n, V)
        picked, is_top = lp[rows, targets], (lp.argmax(dim=-1)[rows] == targets) if greedy else None  # (N,)
    for i, first, last in spans:
        out[i] = (float(picked[first:last].sum()), bool(is_top[first:last].all()) if greedy else None)  # fp32 sum


def _packing_inputs(model, batch: list[_Row], width: int, device) -> dict[str, torch.Tensor]:
    """The 4D attention mask (B, 1, T, T), additive in the model's dtype, and position ids (B, T) of a batch with
    packed rows: causal everywhere, except that a packed input's remainder does not see the remainders before it,
    and its positions continue from the prefix as they would alone. Padding sits at position 0."""
    allowed = torch.ones(width, width, dtype=torch.bool).tril().repeat(len(batch), 1, 1)  # (B, T, T)
    positions = torch.arange(width).repeat(len(batch), 1)  # (B, T)
    for r, row in enumerate(batch):
        positions[r, len(row.tokens):] = 0
        for inp, start in row.starts.items() if row.packed else ():
            end = start + len(inp) - row.prefix
            allowed[r, start:end, row.prefix:start] = False
            positions[r, start:end] = torch.arange(row.prefix, len(inp))
    dtype = unwrap_peft(model).get_input_embeddings().weight.dtype
    mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill_(~allowed, torch.finfo(dtype).min)[:, None]
    return {"attention_mask": mask.to(device), "position_ids": positions.to(device)}


def packs_exactly(model, row: _Row, need: dict, users: dict, requests: list, plain: bool) -> bool:
    """Whether packed rows score as the unpacked inputs do on this model: an fp32 model whose forward honours a
    custom 4D attention mask and position ids (as transformers' masking_utils passes one through) gives the
    requests of `row` the same log-likelihoods both ways (to 1e-5 relative); a 16-bit model's rounding would hide
    a mask it ignores, so it is not packed. Checked once per model object, as `plain_head` (`plain`: its answer)."""
    if model not in _PACKS:
        _PACKS[model] = _check_packing(model, row, need, users, requests, plain)
    return _PACKS[model]


_PACKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _check_packing(model, row: _Row, need, users, requests, plain: bool) -> bool:
    if unwrap_peft(model).get_input_embeddings().weight.dtype != torch.float32:
        return False
    device = next(model.parameters()).device
    packed, alone = [None] * len(requests), [None] * len(requests)
    with inference(model):
        try:
            _score_batch(model, [row], users, requests, packed, device, False, plain)
        except Exception:  # a model whose forward takes no 4D mask or position ids
            return False
        singles = sorted((_single(inp, need) for inp in row.starts), key=lambda r: -len(r.tokens))
        _score_batch(model, singles, users, requests, alone, device, False, plain)
    return all(math.isclose(a[0], b[0], rel_tol=1e-5, abs_tol=1e-5) for a, b in zip(packed, alone) if b is not None)


def loglikelihood(model, tokenizer, pairs: list[tuple[str, str]], batch_size: int = 32,
                  progress: bool = False, max_length: int | None = None) -> list[tuple[float, bool]]:
    """(log-likelihood in nats, is_greedy) of each continuation string given its context string.

    Equal to lm-eval's `HFLM.loglikelihood` on the same model and tokenizer (see module docstring), with
    `HFLM(max_length=max_length)` when given (contexts left-truncated to it; `context_length`).
    """
    requests = encode_pairs(tokenizer, pairs)
    return loglikelihood_tokens(model, requests, context_length(model, tokenizer, max_length), batch_size,
                                progress=progress)


def rolling_windows(ids: list[int], prefix: int, max_len: int) -> list[tuple[list[int], list[int]]]:
    """(context, continuation) windows whose continuations are `ids`, each token once, as the harness's
    `get_rolling_token_windows(ids, prefix, max_len, context_len=1)` + `make_disjoint_window`
    (lm_eval/utils.py:335-390).

    Window 1 reads [prefix] + ids[:max_len - 1] and scores ids[:max_len]. Every later window scores the next
    (up to) max_len tokens; a full one reads only the one token before them, the final partial one reads up to
    max_len tokens of left context. An empty `ids` gives no windows.
    """
    if not ids:
        return []
    first = min(max_len, len(ids))
    windows = [([prefix], ids[:first])]
    done = first
    while done < len(ids):
        m = min(len(ids) - done, max_len)
        end = done + m
        inp = ids[end - max_len - 1: end - 1]  # max_len tokens read
        windows.append((inp[: len(inp) - (m - 1)], ids[end - m: end]))
        done = end
    return windows


def loglikelihood_rolling(model, tokenizer, texts: list[str], batch_size: int = 32,
                          progress: bool = False, max_length: int | None = None) -> list[tuple[float, int]]:
    """(log-likelihood in nats, token count) of each whole text, every token scored once.

    The text is encoded with the tokenizer's default special tokens (a bos-adding tokenizer's bos is scored
    too, from the prefix token), windows as `rolling_windows` of `context_length(model, tokenizer, max_length)`
    tokens, and the window sums added in order, as huggingface.py:1226-1310. The harness reports no token
    count; it is ours, for token perplexity.
    """
    ids = tok_encode(tokenizer, texts)
    max_len, prefix = context_length(model, tokenizer, max_length), prefix_token_id(tokenizer)
    windows = [rolling_windows(t, prefix, max_len) for t in ids]
    scores = iter(loglikelihood_tokens(model, [w for ws in windows for w in ws], max_len, batch_size,
                                       progress=progress, greedy=False))
    return [(sum(next(scores)[0] for _ in ws), len(t)) for ws, t in zip(windows, ids)]
