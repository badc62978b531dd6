"""The ladder's stages. Each is a module with `run(cfg, ctx) -> StageResult` (the stage contract, DESIGN.md)."""

from hf_ladder.stages import dpo, lora, pretrain, quantize, sft

STAGES = {"pretrain": pretrain.run, "sft": sft.run, "dpo": dpo.run, "lora": lora.run, "quantize": quantize.run}
