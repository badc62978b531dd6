"""hf_ladder: walk a small language model up the ladder — pretrain, SFT, DPO, LoRA, quantize — on the Hugging
Face stack, reading its samples at every rung."""

import logging

# bitsandbytes (imported by transformers) warns on every CPU process that an optional kernel package is
# missing and that it falls back to its own CPU library; the fallback is what we use, so keep the console clean.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
# LLM.int8 casts fp32 inputs to fp16 (as the quantize stage's int8 variant is meant to) and says so at every matmul:
# 13,000 identical lines in one `make ladder`.
logging.getLogger("bitsandbytes.autograd._functions").setLevel(logging.ERROR)

__version__ = "0.1.0"
