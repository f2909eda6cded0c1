"""Tokenizer and model build, generation, Countdown scoring, and one SFT run on a tiny model."""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path

import pytest
import torch

from pipeline import params
from posttrain import generation
from posttrain.data_io import write_jsonl
from posttrain.evaluation import countdown as countdown_eval
from posttrain.training.base_model import SPECIAL_TOKENS
from stages import generate
from tests.conftest import ROOT


def test_tokenizer_agrees_on_every_loading_path(tiny_model):
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer, Qwen2Tokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    assert isinstance(tokenizer, Qwen2Tokenizer)
    text = "Numbers: [14, 2, 9]\nTarget: 25\n<answer>14 + 9 + 2</answer><|im_end|> ünïcode 12345"
    ids = tokenizer(text)["input_ids"]
    assert Tokenizer.from_file(str(tiny_model / "tokenizer.json")).encode(text).ids == ids
    assert tokenizer.decode(ids) == text
    assert [tokenizer.decode([i]) for i in tokenizer("12345")["input_ids"]] == list("12345")  # Qwen2: one digit each
    special_ids = [tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS]
    assert special_ids == [0, 1, 2] and all(tokenizer(t)["input_ids"] == [i] for t, i in zip(SPECIAL_TOKENS, special_ids))
    chat = tokenizer.apply_chat_template([{"role": "system", "content": "S"}, {"role": "user", "content": "U"}],
                                         tokenize=False, add_generation_prompt=True)
    assert chat == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n"


def test_model_build_is_seeded_qwen2(tiny_model):
    from transformers import AutoModelForCausalLM, Qwen2ForCausalLM

    from posttrain.training.base_model import build

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    assert isinstance(model, Qwen2ForCausalLM) and model.config.num_hidden_layers == 2
    cfg = params.BaseModel(source="build", revision=None, vocab_size=300, config=dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
        max_position_embeddings=256, tie_word_embeddings=True), pretrain=None)
    texts = ["Numbers: [1, 2, 3]\nTarget: 6\n"] * 10
    a, _ = build(cfg, texts, seed=1)
    b, _ = build(cfg, texts, seed=1)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def _params(n: int = 3, temperature: float = 1.0) -> params.Params:
    sample = params.Decoding(n=n, temperature=temperature, top_p=1.0, max_new_tokens=12, repetition_penalty=1.0,
                             chat_template=False)
    generate_cfg = params.Generate(backend="transformers", batch_size=4, teacher=sample, instruct=sample,
                                   greedy=dataclasses.replace(sample, n=1, temperature=0.0),
                                   sweep=params.Sweep(n=n, top_p=1.0, max_new_tokens=12, temperatures=[temperature],
                                                     prompts=10, repetition_penalty=1.0, chat_template=False))
    countdown = params.Countdown(prompt_template="Numbers: {nums}\nTarget: {target}\n", tasks_source="generator",
                                 tasks_revision=None, tasks_split="train", train_rows=[0, 1], eval_rows=[1, 2],
                                 n_eval=1,
                                 warmstart_source="generator", warmstart_revision=None, warmstart_train=1,
                                 warmstart_test=1, generator=None)
    instruct = params.Instruct(smoltalk_source="generator", smoltalk_revision=None, ultrafeedback_source="generator",
                               ultrafeedback_revision=None, system_prompt="Be brief.",
                               sft_train=1, sft_test=1, prefs_train=1, prefs_test=1, gen_train=1, gen_test=1,
                               sft_noise=0.0, sft_verbose=0.5)
    return dataclasses.replace(params.load(ROOT / "params.yaml"), seed=0, countdown=countdown, instruct=instruct,
                               generate=generate_cfg, score=params.Score(best_of=[1, 2]))


TASKS = [{"target": 6, "nums": [1, 2, 3]}, {"target": 24, "nums": [2, 3, 4, 1]}, {"target": 9, "nums": [3, 3, 3]},
         {"target": 10, "nums": [5, 5]}, {"target": 7, "nums": [10, 2, 5]}]


def test_generation_rows_cover_every_prompt_and_sample(tiny_model):
    rows = generate.generate(tiny_model, "countdown", TASKS, _params(n=3), "sweep", temperature=1.0)
    assert [(r["prompt_id"], r["sample"]) for r in rows] == list(itertools.product(range(5), range(3)))
    assert all(r["completion_tokens"] <= 12 and r["finish"] in ("stop", "length") for r in rows)
    assert {r["model"] for r in rows} == {tiny_model.name} and {r["temperature"] for r in rows} == {1.0}
    greedy = generate.generate(tiny_model, "countdown", TASKS, _params(), "greedy")
    assert len(greedy) == 5 and greedy == generate.generate(tiny_model, "countdown", TASKS, _params(), "greedy")


def test_batched_greedy_equals_one_prompt_at_a_time(tiny_model):
    """Left padding and length sorting must not change what greedy decoding writes."""
    batched = generate.generate(tiny_model, "countdown", TASKS, _params(), "greedy")
    p = _params()
    single = dataclasses.replace(p, generate=dataclasses.replace(p.generate, batch_size=1))
    assert [r["text"] for r in batched] == [r["text"] for r in generate.generate(tiny_model, "countdown", TASKS,
                                                                                 single, "greedy")]


def test_generation_stops_at_im_end(tiny_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    # The layers add nothing and every embedding is the same vector, so the last hidden state is that
    # vector after the final norm, at every position: an lm_head that only id 2 (<|im_end|>) reads
    # makes it greedy decoding's first choice.
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") == 2
    model.config.tie_word_embeddings = False
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.model.embed_tokens.weight.fill_(1.0)
        model.lm_head.weight = torch.nn.Parameter(torch.zeros_like(model.lm_head.weight))
        model.lm_head.weight[2] = 1.0
    forced = tiny_model.parent / "stops"
    model.save_pretrained(forced)
    tokenizer.save_pretrained(forced)
    rows = generate.generate(forced, "countdown", TASKS, _params(), "greedy")
    assert all(r["finish"] == "stop" and r["completion_tokens"] == 1 and r["text"] == "" for r in rows)


def test_instruct_prompts_use_the_chat_template_and_system_prompt(tiny_model):
    from transformers import AutoTokenizer

    p = _params()
    rendered = generation.render_prompts("instruct", [{"prompt": "Say hi."}], AutoTokenizer.from_pretrained(tiny_model),
                                         prompt_template=p.countdown.prompt_template,
                                         system_prompt=p.instruct.system_prompt)
    assert rendered == ["<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nSay hi.<|im_end|>\n"
                        "<|im_start|>assistant\n"]


def test_greedy_with_several_samples_is_refused(tiny_model):
    from posttrain.errors import UserError

    p = _params()
    bad = dataclasses.replace(p, generate=dataclasses.replace(p.generate, greedy=dataclasses.replace(
        p.generate.teacher, temperature=0.0)))
    with pytest.raises(UserError, match="generate.greedy"):
        generate.generate(tiny_model, "countdown", TASKS, bad, "greedy")


def _with_decoding(p: params.Params, name: str, **settings) -> params.Params:
    return dataclasses.replace(p, generate=dataclasses.replace(
        p.generate, **{name: dataclasses.replace(getattr(p.generate, name), **settings)}))


def test_a_models_generation_config_does_not_change_what_is_sampled(tiny_model, tmp_path):
    """Qwen2.5-Instruct's generation_config.json (top_k 20, repetition_penalty 1.05, ...) must not apply."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    for name in ("plain", "opinionated"):
        AutoModelForCausalLM.from_pretrained(tiny_model).save_pretrained(tmp_path / name)
        AutoTokenizer.from_pretrained(tiny_model).save_pretrained(tmp_path / name)
    (tmp_path / "plain" / "generation_config.json").unlink()
    GenerationConfig(do_sample=True, top_k=1, repetition_penalty=5.0, temperature=0.3, top_p=0.5,
                     no_repeat_ngram_size=1, min_new_tokens=5).save_pretrained(tmp_path / "opinionated")

    def texts(model: Path, decoding: str, **kwargs) -> list[tuple]:
        rows = generate.generate(model, "countdown", TASKS[:2], _params(), decoding, **kwargs)
        return [(r["text"], r["completion_tokens"], r["finish"]) for r in rows]

    for decoding, kwargs in [("sweep", {"temperature": 1.0}), ("greedy", {})]:
        assert texts(tmp_path / "opinionated", decoding, **kwargs) == texts(tmp_path / "plain", decoding, **kwargs)


def test_the_repetition_penalty_is_applied(tiny_model):
    plain = generate.generate(tiny_model, "countdown", TASKS, _params(), "greedy")
    penalized = generate.generate(tiny_model, "countdown", TASKS, _with_decoding(_params(), "greedy",
                                                                                repetition_penalty=5.0), "greedy")
    assert [r["text"] for r in plain] != [r["text"] for r in penalized]
    assert {r["repetition_penalty"] for r in penalized} == {5.0} and {r["chat_template"] for r in penalized} == {False}


@pytest.mark.parametrize("decoding, temperature", [("sweep", 0.7), ("greedy", None)])
def test_vllm_gets_one_seeded_request_per_prompt_with_every_setting(tiny_model, monkeypatch, decoding, temperature):
    """A fake `vllm` module records what the stage asks vLLM for; no GPU needed."""
    import sys
    import types

    from transformers import AutoTokenizer

    calls = {}

    class SamplingParams:
        def __init__(self, **kwargs):
            self.kwargs = kwargs

    class LLM:
        def __init__(self, **kwargs):
            calls["llm"] = kwargs

        def get_tokenizer(self):
            return AutoTokenizer.from_pretrained(tiny_model)

        def generate(self, prompts, sampling_params):
            calls["prompts"], calls["requests"] = prompts, sampling_params
            return [types.SimpleNamespace(prompt_token_ids=[0] * (i + 1), outputs=[
                types.SimpleNamespace(text=f"{i}.{k}", token_ids=[5, 2], finish_reason="stop")
                for k in range(request.kwargs["n"])]) for i, request in enumerate(sampling_params)]

    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(LLM=LLM, SamplingParams=SamplingParams))
    p = _with_decoding(dataclasses.replace(_params(n=2, temperature=0.7), seed=7), decoding, repetition_penalty=1.1)
    p = dataclasses.replace(p, generate=dataclasses.replace(p.generate, backend="vllm"))
    rows = generate.generate(tiny_model, "countdown", TASKS, p, decoding, temperature)
    d = p.generate.sweep.at(temperature) if decoding == "sweep" else p.generate.greedy
    assert calls["llm"] == {"model": str(tiny_model), "seed": 7}
    assert calls["prompts"] == generation.render_prompts("countdown", TASKS, None,
                                                         prompt_template=p.countdown.prompt_template, system_prompt="")
    assert [request.kwargs for request in calls["requests"]] == [
        {"n": d.n, "temperature": d.temperature, "top_p": d.top_p, "top_k": 0, "repetition_penalty": 1.1,
         "max_tokens": 12, "stop_token_ids": [0, 2], "seed": 7 + i} for i in range(len(TASKS))]
    assert [(r["prompt_id"], r["sample"], r["text"]) for r in rows] == [
        (i, k, f"{i}.{k}") for i in range(len(TASKS)) for k in range(d.n)]
    assert {(r["backend"], r["repetition_penalty"]) for r in rows} == {("vllm", 1.1)}


def test_score_metrics_from_known_completions():
    tasks = [{"target": 6, "nums": [1, 2, 3]}, {"target": 5, "nums": [2, 3]}]
    greedy = [{"prompt_id": 0, "sample": 0, "decoding": "greedy", "completion_tokens": 5,
               "text": "<answer>1 + 2 + 3</answer>"},
              {"prompt_id": 1, "sample": 0, "decoding": "greedy", "completion_tokens": 3, "text": "no idea"}]
    pool = [{"prompt_id": i, "sample": s, "decoding": "sweep", "completion_tokens": 4, "text": text, "temperature": 1.0}
            for i, texts in enumerate([["<answer>1 * 2 * 3</answer>", "<answer>3 + 3</answer>"],
                                       ["<answer>2 * 3</answer>", "<answer>2 + 3</answer>"]])
            for s, text in enumerate(texts)]
    where = Path("x.jsonl")
    m = {**countdown_eval.greedy_metrics(countdown_eval.score_rows(tasks, greedy, where)),
         **countdown_eval.pool_metrics(countdown_eval.score_rows(tasks, pool, where), [1, 2], len(tasks))}
    assert m["accuracy"] == 0.5 and m["score"] == 0.5 and m["format_rate"] == 0.5 and m["n"] == 2
    assert m["pass_at_1"] == 0.5 and m["pass_at_2"] == 1.0
    assert m["best_of_2_score"] == 1.0 and m["best_of_1_score"] == pytest.approx((0.55 + 0.55) / 2)


def test_sft_trains_and_saves(tiny_model, tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    from stages import sft

    rows = [{"query": f"Numbers: [{a}, 2, 3]\nTarget: {a + 5}\n", "completion": f"<answer>{a} + 2 + 3</answer>"}
            for a in range(1, 40)]
    write_jsonl(tmp_path / "train.jsonl", rows)
    fields = {"max_steps": 2, "per_device_train_batch_size": 4, "learning_rate": 1e-2, "logging_steps": 1,
              "max_length": 64}
    sft.train("sft_countdown", fields, tiny_model, tmp_path / "train.jsonl", None, tmp_path / "out", tmp_path / "live",
              saving=params.Checkpoints(steps=500, save_total_limit=2))
    before, after = load_file(tiny_model / "model.safetensors"), load_file(tmp_path / "out" / "model.safetensors")
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert AutoTokenizer.from_pretrained(tmp_path / "out").eos_token == "<|im_end|>"
    assert (tmp_path / "live" / "metrics.json").exists() and not (tmp_path / "out.tmp").exists()


def test_a_killed_generation_resumes_after_its_last_batch_with_the_same_rows(tiny_model, tmp_path, monkeypatch):
    """Issue 14 §1: generation writes its rows as it goes, and a rerun skips the batches already done; the random
    state journalled after each batch makes the resumed samples those of an uninterrupted run."""
    from posttrain import journal

    p = _params(n=2, temperature=1.0)
    p = dataclasses.replace(p, generate=dataclasses.replace(p.generate, batch_size=2))  # 5 prompts: 3 batches
    whole = generate.generate(tiny_model, "countdown", TASKS, p, "sweep", temperature=1.0)
    partial = tmp_path / "out.jsonl.partial"
    commit = journal.Journal.commit

    def killed_after_two(self, rows, rng):
        if self.batches == 2:
            raise KeyboardInterrupt  # the kill, after two batches were journalled
        commit(self, rows, rng)

    monkeypatch.setattr(journal.Journal, "commit", killed_after_two)
    with pytest.raises(KeyboardInterrupt):
        generate.generate(tiny_model, "countdown", TASKS, p, "sweep", temperature=1.0, partial=partial)
    monkeypatch.setattr(journal.Journal, "commit", commit)
    assert len((partial / "rows.jsonl").read_text().splitlines()) == 2 * 2 * 2  # two batches of 2 prompts x 2
    with open(partial / "rows.jsonl", "a") as f:
        f.write('[99, 0, "never counted", 1, 1, "stop"]\n')  # appended, then killed before the state
    resumed = generate.generate(tiny_model, "countdown", TASKS, p, "sweep", temperature=1.0, partial=partial)
    assert resumed == whole
    other = dataclasses.replace(p, seed=1)  # a journal of other settings is never resumed
    generate.generate(tiny_model, "countdown", TASKS, other, "sweep", temperature=1.0, partial=partial)
    assert json.loads((partial / "state.json").read_text())["batches"] == 3
