"""The ladder's stages. Each is a module with `run(cfg, ctx) -> StageResult` (the stage contract, DESIGN.md)."""

from hf_ladder.stages import pretrain

STAGES = {"pretrain": pretrain.run}
