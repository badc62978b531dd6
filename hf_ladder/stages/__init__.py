"""The ladder's stages, bottom to top. Each is one file that declares `STAGE` (`hf_ladder.stages.common.Stage`:
its name, the classes whose keys its recipe section takes, its `run`). The command line, the ladder, the recipe
checker, the eval and the hub read LADDER. A new stage is one new file and one line here."""

from hf_ladder.stages import dpo, lora, pretrain, quantize, sft

LADDER = (pretrain.STAGE, sft.STAGE, dpo.STAGE, lora.STAGE, quantize.STAGE)
STAGES = {stage.name: stage for stage in LADDER}
STAGE_NAMES = tuple(STAGES)
