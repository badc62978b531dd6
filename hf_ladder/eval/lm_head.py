"""Log-probabilities of target tokens from a causal LM's final hidden states, the LM head a tile at a time.

Scoring needs log p(target) at some positions, not (positions, vocabulary) logits: `head_log_probs` applies the
output embedding to the scored hidden states only, on the CPU `CPU_TILE` (positions x vocabulary entries) at a
time, each row shifted by one constant inside the GEMM and its exps summed tile by tile, so no full log-softmax is
ever written; `plain_head` says whether a model's logits are exactly that head applied to its last hidden state
(else the caller scores through the model's own forward). Used by `hf_ladder.eval.loglikelihood` (benchmarks) and
`hf_ladder.eval.perplexity` (whole texts).
"""

from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F

from hf_ladder.modeling import inference, unwrap_peft

LOGIT_BUDGET = 2**25  # fp32 logits held at once (128 MB); their log-softmax needs as much again
CPU_TILE = (1024, 1024)  # (positions, vocabulary entries) per LM-head tile on the CPU: 4 MB of fp32 logits


def head_log_probs(head: torch.nn.Linear, hidden: torch.Tensor, rows: torch.Tensor, targets: torch.Tensor,
                   greedy: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """fp32 log p(targets[k] | hidden[rows[k]]) under the LM head, and whether each target is its position's
    argmax (None unless `greedy`).

    Shapes: hidden (n, d) final hidden states; rows, targets (N,) long (a position may serve several targets:
    MMLU's four letters). Returns (N,) fp32 log-probs and (N,) bool. Equal to
    `log_softmax(head(hidden).float())[rows, targets]` and its `argmax(-1) == targets` (the first maximal index),
    up to float rounding (~1e-7 relative). On the CPU the logits come `CPU_TILE` at a time (as many logits in wider
    vocabulary slices when there are fewer positions than a tile): `_tile_log_probs`. Elsewhere, or for a head that
    is not a plain `nn.Linear` (a quantized one), a block of LOGIT_BUDGET / vocab positions with the whole
    vocabulary at once."""
    vocab = head.out_features
    tiled = hidden.device.type == "cpu" and type(head) is torch.nn.Linear
    step, width = CPU_TILE if tiled else (max(1, LOGIT_BUDGET // vocab), vocab)
    if tiled:  # fewer positions than a tile: wider vocabulary slices, same logits per tile (fewer small kernels)
        width = max(width, step * width // max(1, min(len(hidden), step)))
    log_probs = torch.empty(len(rows), device=hidden.device)  # (N,)
    firsts = torch.zeros(len(hidden), dtype=torch.long, device=hidden.device)  # (n,) first maximal index
    for i in range(0, len(hidden), step):
        h = hidden[i: i + step]  # (r, d)
        mine = ((rows >= i) & (rows < i + step)).nonzero()[:, 0]  # the targets at these positions
        at, tok = rows[mine] - i, targets[mine]
        if not tiled:
            lp = F.log_softmax(head(h).float(), dim=-1)  # (r, V)
            log_probs[mine] = lp[at, tok]
            if greedy:
                firsts[i: i + step] = lp.argmax(dim=-1)
            continue
        found = _tile_log_probs(head, h, at, tok, width, greedy, shift=None)
        if found is None:  # a logit exp-overflowed over the first tile's maxima: shift by the exact maxima
            peaks = torch.stack([_linear(head, h, j, width).amax(dim=-1) for j in range(0, vocab, width)]).amax(0)
            found = _tile_log_probs(head, h, at, tok, width, greedy, shift=peaks)
        log_probs[mine], firsts[i: i + step] = found
    return log_probs, (firsts[rows] == targets) if greedy else None


def _linear(head: torch.nn.Linear, h: torch.Tensor, j: int, width: int, shift: torch.Tensor | None = None):
    """(r, w) fp32 logits of vocabulary entries j..j+width at hidden states h (r, d), minus `shift` (r,) when
    given. For an fp32 head the shift rides in the GEMM (addmm's input, beta 1): no extra pass over the tile."""
    weight = head.weight[j: j + width]  # (w, d)
    bias = None if head.bias is None else head.bias[j: j + width]
    if shift is None or weight.dtype != torch.float32:  # bf16 logits rounded as the model rounds them
        x = F.linear(h, weight, bias).float()
        return x if shift is None else x.sub_(shift[:, None])
    offset = -shift[:, None] if bias is None else bias[None, :] - shift[:, None]  # (r, 1) or (r, w)
    return torch.addmm(offset.expand(len(h), len(weight)), h, weight.t())


def _tile_log_probs(head, h, at, tok, width: int, greedy: bool, shift: torch.Tensor | None):
    """Log-probs of targets `tok` at rows `at` of h (r, d), and each row's first maximal index (zeros unless
    `greedy`), the vocabulary a `width` tile at a time; None when a tile's exp overflows (then call again with
    the exact row maxima as `shift`).

    log p = (logit - s) - log(sum over the vocabulary of exp(logit - s)) holds for any row constant s that keeps
    every exp finite; s is `shift`, or else the first tile's own maxima (the online normalizer of Milakov &
    Gimelshein 2018, "Online normalizer calculation for softmax", without its rescaling: one max, not one per
    tile). A logit 88 nats (fp32's exp range) above the first tile's maxima is all but unheard of in a trained
    model; tests/test_benchmarks.py builds a head that has one."""
    picked = torch.empty(len(at), device=h.device)  # (N_r,) targets' logit - s
    total = torch.zeros(len(h), device=h.device)  # (r,) sum of exp(logit - s)
    best = torch.full((len(h),), -torch.inf, device=h.device)  # (r,) largest logit - s so far
    first = torch.zeros(len(h), dtype=torch.long, device=h.device)  # (r,) its first index
    for j in range(0, head.out_features, width):
        if shift is None:  # the first tile: its maxima become the shift
            x = _linear(head, h, j, width)  # (r, w)
            shift = x.amax(dim=-1)  # (r,)
            x.sub_(shift[:, None])
        else:
            x = _linear(head, h, j, width, shift)  # (r, w) logits - shift
        here = ((tok >= j) & (tok < j + x.shape[1])).nonzero()[:, 0]
        picked[here] = x[at[here], tok[here] - j]
        if greedy:  # the tile's first maximum takes over only when strictly larger: the first index overall
            top, arg = x.max(dim=-1)  # (r,), (r,)
            better = top > best
            first[better] = arg[better] + j
            best = torch.maximum(best, top)
        total.add_(x.exp_().sum(dim=-1))
    if not bool(torch.isfinite(total).all()):
        return None
    return picked - total.log()[at], first


def plain_head(model, ids: torch.Tensor) -> bool:
    """Whether the model's logits are exactly its output embedding applied to its last hidden state, on `ids`
    (1, T): then `head_log_probs` may apply the head itself, in tiles. A model that rescales or soft-caps its
    logits answers False. Checked once per model object (the answer is its architecture's, not its weights')."""
    if model not in _PLAIN_HEAD:
        _PLAIN_HEAD[model] = _check_plain_head(model, ids)
    return _PLAIN_HEAD[model]


_PLAIN_HEAD: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _check_plain_head(model, ids: torch.Tensor) -> bool:
    lm = unwrap_peft(model)
    head, body = lm.get_output_embeddings(), getattr(lm, "base_model", None)
    if not isinstance(head, torch.nn.Linear) or body is None or body is lm:
        return False
    with inference(model):
        own = model(input_ids=ids, use_cache=False).logits  # (1, T, V)
        hidden = getattr(body(input_ids=ids, use_cache=False), "last_hidden_state", None)  # (1, T, d)
        return hidden is not None and torch.equal(own, head(hidden))
