"""`score_text` keeps memory bounded for a long-context, large-vocabulary model, and its numbers stay exact.

A model with a 4,096-position context and GPT-2's 50,257-token vocabulary scores 150,000 characters of
TinyShakespeare in a fresh process, whose peak resident memory must stay under PEAK_RSS_BOUND: `VmHWM` of
/proc/self/status, which is what `resource.getrusage`'s ru_maxrss reports when the process runs alone (inside a
large pytest process, ru_maxrss also counts the forked copy of the parent before exec). Batching whole windows
and taking a full-vocabulary log-softmax, as the eval did before, would hold (9 windows, 4,096, 50,257) fp32
logits twice: about 15 GB.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import torch
import torch.nn.functional as F
from conftest import DATA
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from hf_ladder.eval.perplexity import score_text

PEAK_RSS_BOUND = 2.0e9  # bytes: interpreter + torch + transformers (~0.7 GB) + one 8,192-token batch, chunked logits

SCRIPT = """
import json, resource, sys
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM
from hf_ladder.eval.perplexity import score_text
torch.manual_seed(0)
tokenizer = AutoTokenizer.from_pretrained(sys.argv[1])
config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                     num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=4096)
model = LlamaForCausalLM(config)
text = open(sys.argv[2], encoding="utf-8").read()[:150_000]
s = score_text(model, tokenizer, text, 4096)
# Peak RSS of this process's own memory: VmHWM, which execve resets. getrusage's ru_maxrss also counts the
# forked copy of the parent before exec (the whole pytest process, GBs late in the suite); read it too, as a check.
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
peak = int(status["VmHWM"].split()[0]) * 1024  # kB
rusage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: kilobytes
print(json.dumps({"tokens": s.tokens, "nats": s.nats, "peak_rss": peak, "ru_maxrss": rusage}))
"""


def tiny_llama(tokenizer, context: int) -> LlamaForCausalLM:
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                                        num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                                        max_position_embeddings=context)).eval()


def test_long_text_scores_under_the_memory_bound():
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(DATA / "gpt2-tokenizer"),
                          str(DATA / "tinyshakespeare" / "input.txt")], capture_output=True, text=True, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["tokens"] > 8 * 4096  # several full windows: the unbounded path would batch them all at once
    assert math.isfinite(got["nats"]) and got["nats"] > 0
    assert got["peak_rss"] < PEAK_RSS_BOUND, f"peak RSS {got['peak_rss'] / 1e9:.2f} GB"


def test_chunked_scoring_equals_full_logits_on_a_short_text():
    tokenizer = AutoTokenizer.from_pretrained(DATA / "gpt2-tokenizer")
    model = tiny_llama(tokenizer, 4096)
    text = (DATA / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")[:6000]
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) < 4096  # one window: [eos] + ids[:-1] predicts ids
    inputs = torch.tensor([[tokenizer.eos_token_id] + ids[:-1]])
    with torch.no_grad():
        logprobs = F.log_softmax(model(input_ids=inputs).logits.float(), dim=-1)[0]  # (T, V): the unbounded path
    full = -logprobs.gather(1, torch.tensor(ids)[:, None]).sum().item()
    s = score_text(model, tokenizer, text, 4096)
    assert s.tokens == len(ids)
    assert math.isclose(s.nats, full, rel_tol=1e-5), (s.nats, full)
