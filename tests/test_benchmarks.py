"""Our benchmark scorer against lm-evaluation-harness 0.4.13 on real documents: the same numbers, to 1e-6.

Two tiny random models are saved to disk (safetensors) and scored by both: a GPT-2 (GPT-2 tokenizer, adds
no bos) and one with the ladder's own BPE (trained here on TinyShakespeare; it puts bos in front of every
text). Both have n_positions 128, so MMLU 5-shot prompts are left-truncated. lm-eval reads the same local
files through task YAMLs written by `harness_tasks.write_harness_tasks`.
"""

import copy
import csv
import json
import math

import lm_eval
import pytest
import torch
from harness_tasks import harness_metrics, write_harness_tasks
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel

from hf_ladder.data.tokenizer import adds_bos, train_bpe
from hf_ladder.eval import benchmarks, lm_head
from hf_ladder.eval import loglikelihood as loglikelihood_module
from hf_ladder.eval.benchmarks import hellaswag, lambada, mmlu, wikitext
from hf_ladder.eval.lm_head import plain_head
from hf_ladder.eval.loglikelihood import encode_pairs, loglikelihood, loglikelihood_rolling, rolling_windows
from hf_ladder.modeling import context_length

TASKS = tuple(benchmarks.BENCHMARKS)

SUBJECTS = ["anatomy", "high_school_us_history"]  # the second's 5-shot prompts are far over 128 tokens
LIMIT = 50  # documents per task (MMLU: per subject)
WIKI_LIMIT = {"gpt2": 4, "bpe": 50}  # wikitext needs the full-vocabulary softmax at every token: cheap for the BPE
SCORED = [t for t in TASKS if t != "wikitext"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: these tiny models are overhead-bound, and on a shared 2-core machine two OpenMP
    threads contending with other processes run the tests ~10x slower. Restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _save(tmp_path_factory, name, tokenizer):
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=128, n_embd=32, n_layer=2, n_head=2,
                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    out = tmp_path_factory.mktemp(name)
    GPT2LMHeadModel(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    assert (out / "model.safetensors").is_file()
    return out


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory, data_dir):
    gpt2 = AutoTokenizer.from_pretrained(data_dir / "gpt2-tokenizer")
    text = (data_dir / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")
    bpe = train_bpe(text.split("\n\n"), vocab_size=512)
    assert not adds_bos(gpt2) and adds_bos(bpe)
    return {"gpt2": _save(tmp_path_factory, "gpt2", gpt2), "bpe": _save(tmp_path_factory, "bpe", bpe)}


def _load(path):
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32), AutoTokenizer.from_pretrained(path)


def _harness(path, task_dir, names, wiki_limit):
    """One lm-eval run over all tasks, on the first LIMIT documents (wiki_limit for wikitext)."""
    from lm_eval.tasks import TaskManager

    leaves = {names[t]: LIMIT for t in SCORED if "mmlu" not in t} | {names["wikitext"]: wiki_limit}
    leaves |= {f"{names[t]}_{s}": LIMIT for t in ("mmlu", "mmlu_5shot") for s in SUBJECTS}
    return lm_eval.simple_evaluate(
        model="hf", model_args={"pretrained": str(path), "dtype": "float32"}, device="cpu", batch_size=16,
        tasks=list(names.values()), task_manager=TaskManager(include_path=str(task_dir)),
        samples={name: list(range(n)) for name, n in leaves.items()}, bootstrap_iters=10, verbosity="ERROR")


@pytest.fixture(scope="module")
def scores(model_dirs, data_dir, tmp_path_factory):
    """{kind: (ours, harness, harness samples)}: {task: {metric: value}} twice, {task: [lm-eval sample]}."""
    task_dir = tmp_path_factory.mktemp("tasks")
    names = write_harness_tasks(task_dir, data_dir, SUBJECTS)
    out = {}
    for kind, path in model_dirs.items():
        model, tokenizer = _load(path)
        ours = benchmarks.evaluate(model, tokenizer, SCORED, data_dir, LIMIT, SUBJECTS, batch_size=16, progress=False)
        ours |= benchmarks.evaluate(model, tokenizer, ["wikitext"], data_dir, WIKI_LIMIT[kind], progress=False)
        results = _harness(path, task_dir, names, WIKI_LIMIT[kind])
        theirs = {t: harness_metrics(results, names[t]) for t in TASKS}
        samples = {t: results["samples"][names[t]] for t in TASKS if "mmlu" not in t}
        for task in ("mmlu", "mmlu_5shot"):
            sub = [f"{names[task]}_{s}" for s in SUBJECTS]
            theirs[task] |= {f"acc/{s}": harness_metrics(results, n)["acc"] for s, n in zip(SUBJECTS, sub)}
            samples[task] = [x for n in sub for x in results["samples"][n]]  # subject by subject, as our docs
        out[kind] = ours, theirs, samples
    return out


METRICS = {"hellaswag": ["acc", "acc_stderr", "acc_norm", "acc_norm_stderr"],
           "lambada_openai": ["acc", "acc_stderr", "perplexity"],
           "mmlu": ["acc", *(f"acc/{s}" for s in SUBJECTS)], "mmlu_5shot": ["acc", *(f"acc/{s}" for s in SUBJECTS)],
           "wikitext": ["word_perplexity", "byte_perplexity", "bits_per_byte"]}


@pytest.mark.parametrize("kind", ["gpt2", "bpe"])
@pytest.mark.parametrize("task", list(METRICS))
def test_scores_equal_lm_eval(scores, kind, task):
    ours, theirs = (s[task] for s in scores[kind][:2])
    for metric in METRICS[task]:
        assert ours[metric] == pytest.approx(theirs[metric], rel=1e-6, abs=1e-9), (task, metric)
    want = WIKI_LIMIT[kind] if task == "wikitext" else LIMIT * (len(SUBJECTS) if "mmlu" in task else 1)
    assert ours["n"] == want
    if task == "wikitext":
        assert ours["bits_per_byte"] == pytest.approx(math.log2(ours["byte_perplexity"]), rel=1e-9)
        assert ours["token_perplexity"] > 1


@pytest.mark.parametrize("kind", ["gpt2", "bpe"])
@pytest.mark.parametrize("task", list(METRICS))
def test_requests_and_loglikelihoods_equal_lm_eval(scores, model_dirs, data_dir, kind, task):
    """Request by request: our prompt strings are lm-eval's `arguments`, our (ll, is_greedy) its `resps`."""
    samples = scores[kind][2][task]
    limit = WIKI_LIMIT[kind] if task == "wikitext" else LIMIT
    docs = benchmarks.load(task, data_dir, limit, SUBJECTS)
    doc_ids = [i for s in SUBJECTS for i in range(LIMIT)] if "mmlu" in task else list(range(limit))
    assert [x["doc_id"] for x in samples] == doc_ids and len(docs) == len(doc_ids)
    reqs = [benchmarks.BENCHMARKS[task].requests(d) for d in docs]
    assert reqs == [[tuple(a) for a in x["arguments"]] for x in samples]
    model, tokenizer = _load(model_dirs[kind])
    if task == "wikitext":
        ours = [[(ll,)] for ll, _ in loglikelihood_rolling(model, tokenizer, [r[0][0] for r in reqs])]
        theirs = [[(r[0],) for r in x["resps"]] for x in samples]
    else:
        flat = iter(loglikelihood(model, tokenizer, [r for rs in reqs for r in rs], batch_size=16))
        ours = [[next(flat) for _ in rs] for rs in reqs]
        theirs = [[tuple(r[0]) for r in x["resps"]] for x in samples]
    assert len(ours) == len(theirs) == len(docs)
    for mine, harness in zip(ours, theirs):
        assert [r[0] for r in mine] == pytest.approx([r[0] for r in harness], rel=1e-6)
        assert [r[1:] for r in mine] == [r[1:] for r in harness]  # is_greedy


def test_mmlu_5shot_prompts_are_left_truncated(data_dir, model_dirs):
    _, tokenizer = _load(model_dirs["gpt2"])
    docs = benchmarks.load("mmlu_5shot", data_dir, LIMIT, ["high_school_us_history"])
    assert all(len(d["fewshot"]) == 5 for d in docs)
    lengths = [len(tokenizer(mmlu.context(d))["input_ids"]) for d in docs]
    assert min(lengths) > 128


# ---------------------------------------------------------------------------------------------------------------
# the primitive, request by request, against HFLM


def _greedy_pairs(model, tokenizer, contexts):
    """(context, the model's greedy next token as text) pairs whose text encodes back to that one token."""
    out = []
    for context in contexts:
        g = int(model(torch.tensor([tokenizer(context)["input_ids"]])).logits[0, -1].argmax())
        pair = (context, tokenizer.decode([g]))
        try:
            if encode_pairs(tokenizer, [pair])[0][1] == [g]:
                out.append(pair)
        except ValueError:  # the token merges into the context's last one: no continuation tokens
            continue
    return out


@pytest.mark.parametrize("kind", ["gpt2", "bpe"])
def test_loglikelihood_equals_hflm_on_edge_cases(model_dirs, kind, monkeypatch):
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    model, tokenizer = _load(model_dirs[kind])
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=3, device="cpu")
    prefix = tokenizer.decode(lm.prefix_token_id)
    pairs = [("The cat sat on the", " mat"),
             ("Trailing spaces move  ", "to the continuation"),  # -> ("Trailing spaces move", "  to the ...")
             ("", "An empty context is the prefix token"),
             ("", prefix + " the continuation starts with the prefix token"),
             (prefix + "A context that starts with the prefix text", " is encoded without special tokens"),
             ("word " * 300, "left-truncated: only the last 128 tokens are read"),
             ("Question: 2 + 2 =", " 4"), ("Question: 2 + 2 =", " 5")]  # the same model input, twice
    greedy = _greedy_pairs(model, tokenizer, ["The cat sat on the", "Once upon a time", "1, 2, 3,", "To be", "and"])
    assert greedy
    pairs += greedy
    theirs = lm.loglikelihood([Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)],
                              disable_tqdm=True)
    ours = loglikelihood(model, tokenizer, pairs, batch_size=2)
    for (ll, is_greedy), (ll_h, is_greedy_h) in zip(ours, theirs, strict=True):
        assert ll == pytest.approx(ll_h, rel=1e-6) and is_greedy == is_greedy_h
    assert all(is_greedy for _, is_greedy in ours[-len(greedy):])
    shapes = []  # (rows, positions) of every forward: the CPU's padded-token bound, not batch_size, splits them
    hook = model.transformer.register_forward_pre_hook(lambda _, args, kwargs: shapes.append(kwargs["input_ids"].shape),
                                                        with_kwargs=True)
    monkeypatch.setattr(loglikelihood_module, "CPU_BATCH_TOKENS", 40)
    bounded = loglikelihood(model, tokenizer, pairs, batch_size=32)
    hook.remove()
    assert shapes[0] == (1, 128) and all(rows * width <= 40 for rows, width in shapes[1:]) and len(shapes) > 2
    assert [ll for ll, _ in bounded] == pytest.approx([ll for ll, _ in theirs], rel=1e-6)
    assert [g for _, g in bounded] == [g for _, g in theirs]
    for (context, continuation), mine in zip(pairs, encode_pairs(tokenizer, pairs)):
        if context:
            assert mine == lm._encode_pair(context, continuation)
    assert context_length(model, tokenizer) == lm.max_length == 128


@pytest.mark.parametrize("kind", ["gpt2", "bpe"])
def test_packed_endings_equal_hflm(model_dirs, data_dir, kind):
    """HellaSwag's four endings packed into one row after their shared context (a 4D mask, position ids) give
    HFLM's log-likelihoods and is_greedy, in fewer tokens (docs whose context is left-truncated to the 128
    positions are not packed); a body that ignores the mask fails the packing probe, and its requests are scored
    unpacked, still as HFLM scores them."""
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    model, tokenizer = _load(model_dirs[kind])
    pairs = [p for d in benchmarks.load("hellaswag", data_dir, 12) for p in hellaswag.requests(d)]
    theirs = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=8, device="cpu").loglikelihood(
        [Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)], disable_tqdm=True)
    tokens = []  # (tokens read, 4D mask given) of every forward of the body, the probe's included
    hook = model.transformer.register_forward_pre_hook(
        lambda _, args, kwargs: tokens.append((kwargs.get("input_ids", args[0] if args else None).numel(),
                                               kwargs.get("attention_mask") is not None)), with_kwargs=True)
    packed = loglikelihood(model, tokenizer, pairs, batch_size=8)
    assert loglikelihood_module._PACKS[model]  # the probe ran and passed
    assert [ll for ll, _ in packed] == pytest.approx([ll for ll, _ in theirs], rel=1e-6)
    assert [g for _, g in packed] == [g for _, g in theirs]
    read = tokens[:]
    tokens.clear()
    ignoring = copy.deepcopy(model)  # its body drops the mask: packed endings would see each other
    body = ignoring.transformer
    body.forward = lambda *a, attention_mask=None, **k: type(body).forward(body, *a, **k)
    alone = loglikelihood(ignoring, tokenizer, pairs, batch_size=8)
    hook.remove()
    assert loglikelihood_module._PACKS[ignoring] is False
    assert [ll for ll, _ in alone] == pytest.approx([ll for ll, _ in theirs], rel=1e-6)
    assert [g for _, g in alone] == [g for _, g in theirs]
    unpacked = sum(n for n, _ in tokens)
    assert any(masked for _, masked in read) and sum(n for n, _ in read) < 0.9 * unpacked


def test_max_length_equals_hflm_max_length(model_dirs, data_dir):
    """`eval.max_length` is HFLM's max_length: rolling windows (wikitext, heldout) of that many tokens and long
    contexts left-truncated to it, the same numbers as the harness with that argument; capped at the model's own
    context."""
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    model, tokenizer = _load(model_dirs["bpe"])
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=4, device="cpu", max_length=48)
    texts = [wikitext.requests(d)[0][0] for d in benchmarks.load("wikitext", data_dir, 3)]
    theirs = lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (t,), i) for i, t in enumerate(texts)],
                                      disable_tqdm=True)
    ours = loglikelihood_rolling(model, tokenizer, texts, max_length=48)
    assert [ll for ll, _ in ours] == pytest.approx(theirs, rel=1e-6)
    full = loglikelihood_rolling(model, tokenizer, texts)  # 128-token windows: other numbers
    assert all(abs(a - b) > 1e-3 for (a, _), (b, _) in zip(ours, full))
    pairs = [("word " * 300, " left-truncated to 48 tokens"), ("The cat sat on the", " mat")]
    theirs = lm.loglikelihood([Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)],
                              disable_tqdm=True)
    ours = loglikelihood(model, tokenizer, pairs, max_length=48)
    assert [ll for ll, _ in ours] == pytest.approx([ll for ll, _ in theirs], rel=1e-6)
    assert [g for _, g in ours] == [g for _, g in theirs]
    assert ours[0][0] != pytest.approx(loglikelihood(model, tokenizer, pairs[:1])[0][0], rel=1e-4)
    assert context_length(model, tokenizer, 48) == lm.max_length == 48
    assert context_length(model, tokenizer, 4096) == context_length(model, tokenizer) == 128


class SoftCapped(GPT2LMHeadModel):
    """GPT-2 whose logits are soft-capped (as Gemma 2's): its head alone does not give its logits."""

    def forward(self, *args, **kwargs):
        out = super().forward(*args, **kwargs)
        out.logits = 30.0 * torch.tanh(out.logits / 30.0)
        return out


def test_loglikelihood_equals_hflm_with_tied_logits_and_a_soft_capped_head(model_dirs, monkeypatch):
    """The greedy check's tie rule (argmax's first maximal index, also when the tie spans two of the LM head's
    vocabulary tiles) and the fallback to the model's own forward."""
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    model, tokenizer = _load(model_dirs["gpt2"])
    context = "The cat sat on the"
    g = int(model(torch.tensor([tokenizer(context)["input_ids"]])).logits[0, -1].argmax())
    tied = copy.deepcopy(model)
    tied.lm_head.weight.data[g - 1] = tied.lm_head.weight.data[g]  # token g - 1 now ties g's logit, and wins argmax
    monkeypatch.setattr(lm_head, "CPU_TILE", (1, 1024))  # one position: 1,024-token vocabulary tiles
    far = copy.deepcopy(model)  # a token one vocabulary tile away ties g's logit: the lower index wins
    t = (g + 1024) % model.config.vocab_size
    far.lm_head.weight.data[t] = far.lm_head.weight.data[g]
    capped = SoftCapped.from_pretrained(model_dirs["gpt2"], dtype=torch.float32)
    ids = torch.tensor([tokenizer(context)["input_ids"]])
    assert plain_head(model, ids) and plain_head(tied, ids) and plain_head(far, ids) and not plain_head(capped, ids)
    pairs = [(context, tokenizer.decode([g])), (context, tokenizer.decode([g - 1])), (context, " mat"),
             (context, tokenizer.decode([t]))]
    for m in (tied, far, capped):
        lm = HFLM(pretrained=m, tokenizer=tokenizer, batch_size=3, device="cpu")
        theirs = lm.loglikelihood([Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)],
                                  disable_tqdm=True)
        ours = loglikelihood(m, tokenizer, pairs)
        assert [r[0] for r in ours] == pytest.approx([r[0] for r in theirs], rel=1e-6)
        assert [r[1] for r in ours] == [r[1] for r in theirs]
    assert [r[1] for r in loglikelihood(tied, tokenizer, pairs[:2])] == [False, True]  # the tie goes to g - 1
    assert [r[1] for r in loglikelihood(far, tokenizer, [pairs[0], pairs[3]])] == [g < t, t < g]


def test_head_log_probs_equal_one_log_softmax(monkeypatch):
    """The LM head in tiles against one full-vocabulary log_softmax and argmax: an fp32 head with a bias, the same
    head in bf16, and a position whose logit sits 300 nats above the first vocabulary tile's maximum (its exps
    overflow fp32, so that row block is redone shifted by its exact maxima)."""
    monkeypatch.setattr(lm_head, "CPU_TILE", (4, 1024))  # 3 row blocks x 3 vocabulary tiles
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 3000)
    hidden = torch.randn(10, 16)  # (n, d)
    head.weight.data[2500] = hidden[5] * (300 / hidden[5].dot(hidden[5]))  # row 5: token 2500's logit ~300
    rows = torch.tensor([0, 0, 1, 4, 5, 5, 9])
    targets = torch.tensor([3, 2999, 1024, 7, 2500, 0, 1500])
    for dtype in (torch.float32, torch.bfloat16):
        h, x = head.to(dtype), hidden.to(dtype)
        with torch.inference_mode():
            want = torch.log_softmax(h(x).float(), dim=-1)  # (n, V)
            got, top = lm_head.head_log_probs(h, x, rows, targets, greedy=True)
        assert want[5].argmax() == 2500 and want[5, 0] < -250
        assert got.tolist() == pytest.approx(want[rows, targets].tolist(), rel=1e-6, abs=1e-6), dtype
        assert torch.equal(top, want.argmax(dim=-1)[rows] == targets), dtype


def test_encode_pairs_edge_cases(model_dirs):
    _, tokenizer = _load(model_dirs["gpt2"])
    eot = tokenizer.eos_token_id
    ctx, cont = encode_pairs(tokenizer, [("Hello  ", "world")])[0]
    assert tokenizer.decode(ctx) == "Hello" and tokenizer.decode(cont) == "  world"
    assert encode_pairs(tokenizer, [("", "Hi")])[0] == ([eot], tokenizer("Hi")["input_ids"])
    assert encode_pairs(tokenizer, [("", "<|endoftext|>Hi")])[0] == ([eot], tokenizer("Hi")["input_ids"])
    with pytest.raises(ValueError, match="whitespace only"):
        encode_pairs(tokenizer, [("   ", "x")])
    with pytest.raises(ValueError, match="no tokens"):
        encode_pairs(tokenizer, [("x", "")])


@pytest.mark.parametrize("n", [0, 1, 5, 8, 9, 16, 17, 30])
def test_rolling_windows_are_the_harness_windows(n):
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

    ids = list(range(100, 100 + n))
    theirs = [make_disjoint_window(w) for w in get_rolling_token_windows(ids, 7, max_seq_len=8, context_len=1)]
    assert rolling_windows(ids, 7, 8) == [(list(c), list(k)) for c, k in theirs]
    assert [t for _, k in rolling_windows(ids, 7, 8) for t in k] == ids


# ---------------------------------------------------------------------------------------------------------------
# loaders and task definitions, on the real files


def test_wikitext_pages_and_detokenizer(data_dir):
    from lm_eval.tasks.wikitext.preprocess_wikitext import wikitext_detokenizer

    raw = (data_dir / "wikitext-2" / "wiki.test.raw").read_text(encoding="utf-8")
    pages = wikitext.pages(raw)
    assert len(pages) == 62 and pages[0].startswith(" = Robert Boulter = \n")
    assert " \n" + "\n".join(pages) == raw  # only the blank line before the first heading is dropped
    assert all(p.split("\n")[0].startswith(" = ") and not p.split("\n")[0].startswith(" = = ") for p in pages)
    assert all(wikitext.detokenize(p) == wikitext_detokenizer({"page": p}) for p in pages)


def test_mmlu_csv_formats(data_dir, tmp_path):
    docs = mmlu.subject_rows("anatomy", "test", data_dir)  # header row, 0-3 answers
    assert len(docs) == 135 and docs[0]["answer"] == 0 and len(docs[0]["choices"]) == 4
    assert docs[0]["question"].startswith("A lesion causing compression of the facial nerve")
    original = tmp_path / "mmlu" / "test" / "anatomy_test.csv"  # Hendrycks layout: no header, letter answers
    original.parent.mkdir(parents=True)
    with open(original, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["What is 1?", "01", "1.0", "one", "I", "B"],
                                 ["Q2, with a comma", "a", "b", "c", "d", "D"]])
    docs = benchmarks.load("mmlu", tmp_path, subjects=["anatomy"])
    assert docs[0] == {"subject": "anatomy", "question": "What is 1?", "choices": ["01", "1.0", "one", "I"],
                       "answer": 1}
    assert docs[1]["answer"] == 3 and docs[1]["question"] == "Q2, with a comma"
    assert mmlu.context({**docs[0], "fewshot": [docs[1]]}) == (
        "The following are multiple choice questions (with answers) about anatomy.\n\n"
        "Q2, with a comma\nA. a\nB. b\nC. c\nD. d\nAnswer: D\n\n"
        "What is 1?\nA. 01\nB. 1.0\nC. one\nD. I\nAnswer:")
    with open(original, "a", newline="", encoding="utf-8") as f:
        csv.writer(f).writerow(["Q3", "a", "b", "c", "d", "E"])
    with pytest.raises(ValueError, match=r"anatomy_test.csv: row 3: answer 'E'"):
        benchmarks.load("mmlu", tmp_path, subjects=["anatomy"])
    with pytest.raises(FileNotFoundError, match="college_physics"):
        benchmarks.load("mmlu", tmp_path, subjects=["college_physics"])


def test_hellaswag_and_lambada_rows(data_dir, tmp_path):
    from lm_eval.tasks.hellaswag.utils import preprocess

    docs = benchmarks.load("hellaswag", data_dir)
    assert len(docs) == 1000
    for doc in docs[:200]:
        query, choices, gold = hellaswag.query(doc)
        assert query == preprocess(doc["activity_label"] + ": " + doc["ctx_a"] + " " + doc["ctx_b"].capitalize())
        assert choices == [preprocess(e) for e in doc["endings"]] and gold == int(doc["label"])
    passages = benchmarks.load("lambada_openai", data_dir, limit=3)
    context, target = lambada.split(passages[0]["text"])
    assert len(passages) == 3 and context + target == passages[0]["text"] and target.count(" ") == 1
    bad = tmp_path / "hellaswag" / "bad.jsonl"
    bad.parent.mkdir()
    bad.write_text(json.dumps(docs[0]) + "\n" + json.dumps({**docs[1], "endings": ["a", "b"]}) + "\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:2: 'endings' must be a list of 4 strings"):
        benchmarks.load("hellaswag", tmp_path)
    bad.write_text("{not json\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:1: not valid JSON"):
        benchmarks.load("hellaswag", tmp_path)
    with pytest.raises(FileNotFoundError, match="lambada"):
        benchmarks.load("lambada_openai", tmp_path)
