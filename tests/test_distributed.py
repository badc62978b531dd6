"""Several processes through accelerate, on the CPU: pretraining and SFT as 2 processes (DDP over gloo,
`accelerate launch --multi_gpu --num_processes 2`) follow the loss trajectory of 1 process with the same global
batch, and so does pretraining on 2 "machines" (two `accelerate launch --config_file
recipes/accelerate/multinode.yaml --machine_rank 0|1` on this host, one process each, sharing the run folder as
a cluster's machines share a filesystem); the manifest records the batch, and the accelerate configs in
recipes/accelerate/ pass accelerate's own launcher checks.

Why 2 processes can match 1 process to float rounding, not just statistically: the Trainer's training sampler is a
random permutation of the whole training set seeded by the recipe's seed (accelerate's SeedableRandomSampler), the
same permutation in both runs; `accelerator.prepare` then cuts it into per-device batches in order and deals them
out in turn (BatchSamplerShard: batch i to process i % 2). So optimizer step k of 2 processes x 8 sees exactly the
16 sequences that step k of 1 process x 16 sees. The model starts from the same seed, DDP averages the gradients,
and the loss is normalised by the tokens of the whole global batch (`average_tokens_across_devices`), so the
arithmetic is the same up to the order of the float sums.

Measured on a 2-core CPU, 30 steps, fp32: every logged training loss agrees to <= 1e-6 nats and every logged
gradient norm to <= 1e-6 relative, for pretraining and for SFT. The tolerances (1e-3 nats, 1 % of the gradient
norm) leave three orders of magnitude for other CPUs' kernels and summation orders, and still fails what it is here to
catch: another data order (pretraining with `data_seed=7`) moves the logged loss by up to 1.2e-2 nats and the
gradient norm by up to 20 %; processes that do not average their gradients (what a `Trainer.evaluate()` before
`train()` caused in SFT) move the first gradient norm by 33 % and the loss by 1.3e-2 nats by step 30.
"""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import accelerate  # noqa: F401  (a core dependency: a broken install fails here, it does not skip)
import pytest
import yaml
from conftest import DEFAULT_RECIPE, ROOT, TINY

LOSS_TOLERANCE = 1e-3  # nats, on each logged training loss (measured: <= 1e-6)
GRAD_NORM_TOLERANCE = 1e-2  # relative, on each logged gradient norm (measured: <= 1e-6)
GLOBAL_BATCH = 16
STEPS = 30
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
       "OMP_NUM_THREADS": "1"}
PRETRAIN = [f"pretrain.max_steps={STEPS}", "pretrain.logging_steps=5", "pretrain.bf16=false",
            "pretrain.dataloader_num_workers=0", f"monitor.sample_every={STEPS}"]
SFT = [f"sft.max_steps={STEPS}", "sft.logging_steps=5", "sft.bf16=false", "sft.dataloader_num_workers=0",
       "sft.max_length=64", "sft.max_train_samples=640", "sft.max_eval_samples=32", f"monitor.sample_every={STEPS}"]
CONFIGS = ROOT / "recipes" / "accelerate"
ROUND = 2 * len(yaml.safe_load(DEFAULT_RECIPE.read_text())["monitor"]["prompts"])  # samples per round: greedy, sampled


def cli(run_dir: Path, stage: str, *overrides: str) -> list[str]:
    """What follows the launcher: `hf-ladder run STAGE` on the default recipe shrunk to TINY, into `run_dir`."""
    return ["-m", "hf_ladder.cli", "run", stage, str(DEFAULT_RECIPE), *TINY, *overrides, f"run_dir={run_dir}"]


def hf_ladder(run_dir: Path, stage: str, *overrides: str, processes: int = 1) -> None:
    """`hf-ladder run STAGE` on the default recipe shrunk to TINY, as 1 process or through `accelerate launch`."""
    launch = [sys.executable]
    if processes > 1:
        launch += ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
                   "--main_process_port", "0"]  # a free port: other test runs may hold the default one
    cmd = [*launch, *cli(run_dir, stage, *overrides)]
    done = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{' '.join(cmd)}\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"


def free_port() -> int:
    """A port that nothing listens on now. Every machine of a multi-node launch must be given the same one:
    `--main_process_port 0` would have each machine's launcher pick its own."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def hf_ladder_on_two_machines(run_dir: Path, logs: Path, stage: str, *overrides: str) -> None:
    """`hf-ladder run STAGE` as 2 concurrent `accelerate launch --config_file recipes/accelerate/multinode.yaml
    --machine_rank R` on this host, one process each, both into the same `run_dir` (a cluster's shared
    filesystem). Their output goes to `logs`/machine-R.{out,err}; when one fails the others are stopped (they
    would wait for it in the rendezvous or a collective until torch's timeout)."""
    port = str(free_port())
    cmds, procs = [], []
    for rank in range(2):
        cmds.append([sys.executable, "-m", "accelerate.commands.launch",
                     "--config_file", str(CONFIGS / "multinode.yaml"), "--machine_rank", str(rank),
                     "--main_process_ip", "127.0.0.1", "--main_process_port", port, "--num_processes", "2",
                     *cli(run_dir, stage, *overrides)])
        with open(logs / f"machine-{rank}.out", "w") as out, open(logs / f"machine-{rank}.err", "w") as err:
            procs.append(subprocess.Popen(cmds[-1], cwd=ROOT, env=ENV, stdout=out, stderr=err))
    deadline, late = time.monotonic() + 900, True
    try:
        while time.monotonic() < deadline:
            codes = [p.poll() for p in procs]
            if None not in codes or any(code not in (None, 0) for code in codes):
                late = False
                break
            time.sleep(1)
    finally:
        for p in procs:  # the launcher's agent stops its workers on SIGTERM
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
    failed = [rank for rank, p in enumerate(procs) if p.returncode != 0]
    assert not failed, ("still running after 900 s, stopped\n" if late else "") + "\n".join(
        f"---- machine {rank}: exit {procs[rank].returncode}: {' '.join(cmds[rank])}\n"
        f"{(logs / f'machine-{rank}.out').read_text()[-3000:]}\n{(logs / f'machine-{rank}.err').read_text()[-5000:]}"
        for rank in failed)


def trajectory(stage_dir: Path) -> list[tuple[int, float, float]]:
    """(step, training loss, gradient norm) of each logged training step, from the stage's log_history.json."""
    history = json.loads((stage_dir / "log_history.json").read_text())
    return [(h["step"], h["loss"], h["grad_norm"]) for h in history if "loss" in h]


def assert_same_trajectory(one: Path, two: Path) -> None:
    """The logged training losses and gradient norms of two runs agree within the tolerances (module docstring)."""
    a, b = trajectory(one), trajectory(two)
    shown = "\n".join(f"step {s:3d}: loss {la:.6f} vs {lb:.6f} | grad norm {ga:.6f} vs {gb:.6f}"
                      for (s, la, ga), (_, lb, gb) in zip(a, b))
    assert [s for s, _, _ in a] == [s for s, _, _ in b] == list(range(5, STEPS + 1, 5)), shown
    for (_, loss_a, norm_a), (_, loss_b, norm_b) in zip(a, b):
        assert abs(loss_a - loss_b) <= LOSS_TOLERANCE, f"1 process vs 2 processes:\n{shown}"
        assert abs(norm_a - norm_b) <= GRAD_NORM_TOLERANCE * norm_a, f"1 process vs 2 processes:\n{shown}"
    print(f"{one.name}, 1 process vs 2 processes:\n{shown}")


def recorded_batch(run_dir: Path, stage: str) -> dict:
    """world_size, per_device_train_batch_size and global_batch as the manifest records them for `stage`."""
    inputs = json.loads((run_dir / "manifest.json").read_text())["stages"][stage]["inputs"]
    return {key: inputs.get(key) for key in ("world_size", "per_device_train_batch_size", "global_batch")}


def assert_samples_written_once(stage_dir: Path) -> None:
    """Only the main process writes samples: one row per prompt and decoding at each sample round."""
    steps = [json.loads(line)["step"] for line in (stage_dir / "samples.jsonl").read_text().splitlines()]
    assert sorted(steps) == [0] * ROUND + [STEPS] * ROUND


def pretrain_overrides(processes: int) -> list[str]:
    """PRETRAIN with the per-device batch that keeps the global batch at GLOBAL_BATCH on `processes`."""
    return [*PRETRAIN, f"pretrain.per_device_train_batch_size={GLOBAL_BATCH // processes}"]


@pytest.fixture(scope="module")
def pretrained_alone(tmp_path_factory) -> Path:
    """The run_dir of pretraining as 1 process x 16: what the runs on 2 processes and on 2 machines follow."""
    run_dir = tmp_path_factory.mktemp("pretrain-1proc")
    hf_ladder(run_dir, "pretrain", *pretrain_overrides(1))
    return run_dir


@pytest.fixture(scope="module")
def pretrained(pretrained_alone, tmp_path_factory) -> dict[int, Path]:
    """{processes: run_dir}: the same pretraining as 1 process x 16 and as 2 processes x 8 (global batch 16)."""
    run_dir = tmp_path_factory.mktemp("pretrain-2proc")
    hf_ladder(run_dir, "pretrain", *pretrain_overrides(2), processes=2)
    return {1: pretrained_alone, 2: run_dir}


@pytest.fixture(scope="module")
def fine_tuned(pretrained, tmp_path_factory) -> dict[int, Path]:
    """{processes: run_dir}: SFT of the 1-process pretrained model as 1 process x 16 and as 2 processes x 8."""
    base = pretrained[1] / "pretrain" / "model"
    runs = {n: tmp_path_factory.mktemp(f"sft-{n}proc") for n in (1, 2)}
    for n, run_dir in runs.items():
        hf_ladder(run_dir, "sft", *SFT, f"sft.model_name_or_path={base}",
                  f"sft.per_device_train_batch_size={GLOBAL_BATCH // n}", processes=n)
    return runs


def test_pretraining_on_two_processes_follows_one_process(pretrained):
    one, two = pretrained[1] / "pretrain", pretrained[2] / "pretrain"
    assert_same_trajectory(one, two)
    val = [json.loads((d / "metrics.json").read_text())["val_loss"] for d in (one, two)]
    assert val[0] == pytest.approx(val[1], abs=LOSS_TOLERANCE)  # the same weights at the end, scored the same
    for stage_dir in (one, two):
        assert_samples_written_once(stage_dir)
        assert (stage_dir / "model" / "model.safetensors").is_file()


def test_sft_on_two_processes_follows_one_process(fine_tuned):
    one, two = fine_tuned[1] / "sft", fine_tuned[2] / "sft"
    assert_same_trajectory(one, two)
    for stage_dir in (one, two):
        assert_samples_written_once(stage_dir)
        assert (stage_dir / "model" / "model.safetensors").is_file()


def test_pretraining_on_two_machines_follows_one_process(pretrained_alone, tmp_path):
    """Two machines of one process each (recipes/accelerate/multinode.yaml): the same global batch dealt out
    the same way as on 2 processes of one machine, so the same trajectory as 1 process."""
    run_dir = tmp_path / "run"
    hf_ladder_on_two_machines(run_dir, tmp_path, "pretrain", *pretrain_overrides(2))
    assert_same_trajectory(pretrained_alone / "pretrain", run_dir / "pretrain")
    assert recorded_batch(run_dir, "pretrain") == {"world_size": 2, "per_device_train_batch_size": 8,
                                                   "global_batch": 16}
    assert_samples_written_once(run_dir / "pretrain")  # machine 1's process is local main too, not world main
    assert (run_dir / "pretrain" / "model" / "model.safetensors").is_file()


@pytest.mark.parametrize("stage", ["pretrain", "sft"])
def test_manifest_records_world_size_and_batch(stage, pretrained, fine_tuned):
    runs = pretrained if stage == "pretrain" else fine_tuned
    assert recorded_batch(runs[1], stage) == {"world_size": 1, "per_device_train_batch_size": 16, "global_batch": 16}
    assert recorded_batch(runs[2], stage) == {"world_size": 2, "per_device_train_batch_size": 8, "global_batch": 16}


# ------------------------------------------------------------------------------------------ the configs

KINDS = {"ddp": "MULTI_GPU", "fsdp": "FSDP", "deepspeed_zero2": "DEEPSPEED", "deepspeed_zero3": "DEEPSPEED",
         "multinode": "MULTI_GPU"}


def launch_settings(config: Path, *launch_args: str) -> tuple:
    """What `accelerate launch --config_file CONFIG [launch_args] -m hf_ladder.cli ...` would start, without
    starting it: accelerate's own parsing of the file (unknown top-level keys are errors), its launcher's checks,
    and the environment it hands the processes. Returns (launch arguments, ClusterConfig, environment)."""
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    cluster = load_config_from_file(str(config))
    args = launch_command_parser().parse_args(["--config_file", str(config), *launch_args, "-m", "hf_ladder.cli"])
    args, defaults, _ = _validate_launch_command(args)
    if args.use_deepspeed:  # as `launch_command` does before the DeepSpeed launcher
        args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)
        return args, cluster, prepare_deepspeed_cmd_env(args)[1]
    return args, cluster, prepare_multi_gpu_env(args)


def launch_command_options():
    """Every `accelerate launch` option with its default (the names its config sections may use)."""
    from accelerate.commands.launch import launch_command_parser

    return launch_command_parser().parse_args(["script.py"])


@pytest.fixture(autouse=True)
def leave_no_trace():
    """accelerate's launcher helpers and plugins touch process-wide state (environment, torch threads, the
    PartialState singleton); later in-process tests must not inherit it."""
    import torch
    from accelerate.state import AcceleratorState, PartialState

    env, threads = dict(os.environ), torch.get_num_threads()
    yield
    os.environ.clear()
    os.environ.update(env)
    torch.set_num_threads(threads)
    AcceleratorState._reset_state(reset_partial_state=True)
    PartialState._reset_state()


def test_every_accelerate_config_is_checked():
    assert sorted(KINDS) == sorted(config.stem for config in CONFIGS.glob("*.yaml"))


def rendezvous(args) -> str:
    """host:port where torchrun's static rendezvous meets (accelerate hands it one or the other)."""
    return getattr(args, "rdzv_endpoint", None) or f"{args.master_addr}:{args.master_port}"


@pytest.mark.parametrize("name", sorted(KINDS))
def test_accelerate_config_passes_the_launcher(name, monkeypatch):
    from accelerate.utils import DeepSpeedPlugin, FullyShardedDataParallelPlugin
    from accelerate.utils.dataclasses import get_module_class_from_name
    from transformers import GPT2Config, GPT2LMHeadModel, TrainingArguments

    config = CONFIGS / f"{name}.yaml"
    assert config.read_text().startswith("#"), "each config starts with a comment saying when to use it"
    raw = yaml.safe_load(config.read_text())
    # machine 0 of several refuses a port in use (one machine falls back to a free one): not the default 29500
    port = ("--main_process_port", str(free_port())) if raw["num_machines"] > 1 else ()
    args, cluster, env = launch_settings(config, *port)
    assert cluster.distributed_type.value == KINDS[name] and cluster.num_processes == args.num_processes == 2
    assert env["ACCELERATE_MIXED_PRECISION"] == "no"  # the recipe's bf16 / fp16 decide
    # every key of the nested sections is an `accelerate launch` option (the launcher ignores unknown ones silently)
    options = vars(launch_command_options())
    for key in raw.get("fsdp_config", {}):  # the launcher reads `x` here as `fsdp_x`
        assert (key if key.startswith("fsdp") else f"fsdp_{key}") in options, f"{name}: fsdp_config.{key} is unknown"
    for key in raw.get("deepspeed_config", {}):
        assert key in options, f"{name}: deepspeed_config.{key} is unknown"
    assert launch_settings(config, *port, "--num_processes", "4")[0].num_processes == 4  # a default, not a pin
    if name == "multinode":  # num_processes counts all machines; each runs its share, --machine_rank picks which
        assert (args.num_machines, args.nproc_per_node, args.node_rank) == (2, "1", 0)
        assert launch_settings(config, *port, "--num_processes", "16")[0].nproc_per_node == "8"
        other = launch_settings(config, "--machine_rank", "1", "--main_process_ip", "10.1.2.3",
                                "--main_process_port", "29555")[0]
        assert (other.nnodes, other.node_rank, rendezvous(other)) == ("2", 1, "10.1.2.3:29555")
    for key, value in env.items():  # what the launched processes' Accelerator reads
        if key.startswith(("ACCELERATE_", "FSDP_")):
            monkeypatch.setenv(key, value)
    if name == "fsdp":
        plugin = FullyShardedDataParallelPlugin()
        assert plugin.fsdp_version == 2 and plugin.transformer_cls_names_to_wrap == ["GPT2Block"]
        assert plugin.state_dict_type.name == "FULL_STATE_DICT"  # saved weights whole, not a shard per process
        gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=1, n_embd=8, n_positions=8, vocab_size=16))
        assert get_module_class_from_name(gpt2, "GPT2Block") is not None  # the class the recipes' blocks have
    if name.startswith("deepspeed"):
        ds = DeepSpeedPlugin().deepspeed_config
        zero = ds["zero_optimization"]
        assert zero["stage"] == int(name[-1])
        assert zero["offload_optimizer"]["device"] == zero["offload_param"]["device"] == "none"
        assert ds["gradient_accumulation_steps"] == "auto"  # the recipe's, filled in by the Trainer
        # transformers refuses a DeepSpeed gradient_clipping that differs from TrainingArguments.max_grad_norm
        norms = {TrainingArguments.max_grad_norm} | {
            section.get("max_grad_norm", TrainingArguments.max_grad_norm)
            for recipe in (ROOT / "recipes").glob("*.yaml")
            for section in yaml.safe_load(recipe.read_text()).values() if isinstance(section, dict)}
        assert norms == {ds["gradient_clipping"]}
    if name == "deepspeed_zero3":
        assert env["ACCELERATE_DEEPSPEED_ZERO3_INIT"] == "true"
        assert ds["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
