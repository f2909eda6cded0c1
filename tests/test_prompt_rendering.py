"""One prompt, one string: every stage renders an instruction prompt as the others do, with Qwen2.5's real
chat template, and an empty system prompt gives no system turn (not the template's "You are Qwen, ...")."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from pipeline import params
from posttrain import generation
from posttrain.errors import UserError
from posttrain.evaluation import text_metrics
from posttrain.prompts import chat_prompt, countdown_prompt, load_chat_tokenizer, without_default_system
from posttrain.training import rl
from stages import dpo, generate, sft
from tests.conftest import ROOT

USER = "Name three primes."
ANSWER = "2, 3 and 5."
QWEN_DEFAULT = "You are Qwen"
SYSTEM_PROMPTS = ["", "You are a helpful assistant."]


@pytest.fixture(scope="module")
def qwen_model(tiny_model, tmp_path_factory) -> Path:
    """The tiny model with Qwen2.5's special tokens and its real chat template (TRL's copy of it)."""
    import trl
    from transformers import AutoTokenizer

    folder = tmp_path_factory.mktemp("qwen") / "qwen"
    shutil.copytree(tiny_model, folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert tokenizer.eos_token == "<|endoftext|>" and "<|im_end|>" in tokenizer.get_vocab()
    tokenizer.chat_template = (Path(trl.__file__).parent / "chat_templates" / "qwen2_5.jinja").read_text()
    tokenizer.save_pretrained(folder)
    return folder


class Built(Exception):
    """Raised in place of training: carries the trainer the stage built."""


def _never_train(trainer_cls: type) -> type:
    class Untrained(trainer_cls):
        def train(self, *args, **kwargs):
            raise Built(self)

    return Untrained


def _built_trainer(call) -> object:
    with pytest.raises(Built) as built:
        call()
    return built.value.args[0]


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _params(system_prompt: str) -> params.Params:
    p = params.load(ROOT / "params.yaml")
    return dataclasses.replace(p, instruct=dataclasses.replace(p.instruct, system_prompt=system_prompt),
                               generate=dataclasses.replace(p.generate, backend="transformers"))


def sft_prompt(model: Path, rows: list[dict], tmp_path: Path, monkeypatch, system_prompt: str = "") -> str:
    """The prompt part (no loss) of the first training row of the stage's `SFTTrainer`, as text."""
    import trl

    monkeypatch.setattr(trl, "SFTTrainer", _never_train(trl.SFTTrainer))
    trainer = _built_trainer(lambda: sft.train(
        "sft_instruct", {"max_steps": 1, "per_device_train_batch_size": 1}, model,
        _write_jsonl(tmp_path / "sft.jsonl", rows), None, tmp_path / "sft", None, system_prompt=system_prompt,
        saving=params.Checkpoints(steps=500, save_total_limit=2)))
    row = trainer.train_dataset[0]
    n_prompt = next(i for i, label in enumerate(row["labels"]) if label != -100)  # TRL scores the completion only
    return trainer.processing_class.decode(row["input_ids"][:n_prompt])


def dpo_prompt(model: Path, system_prompt: str, tmp_path: Path) -> str:
    """The tokenized prompt of the stage's `DPOTrainer`, as text."""
    pair = {"prompt": USER, "chosen": [{"role": "user", "content": USER}, {"role": "assistant", "content": ANSWER}],
            "rejected": [{"role": "user", "content": USER}, {"role": "assistant", "content": "4"}]}
    section = params.Dpo(beta=0.1, loss_type="sigmoid", lora=None, trainer={"max_steps": 1, "max_length": 128})
    trainer = dpo.build_trainer("dpo", section, system_prompt, model, _write_jsonl(tmp_path / "prefs.jsonl", [pair]),
                                None, tmp_path / "dpo", None, params.Checkpoints(steps=500, save_total_limit=2))
    return trainer.processing_class.decode(trainer.train_dataset[0]["prompt_ids"])


def rl_prompt(model: Path, system_prompt: str, tmp_path: Path, monkeypatch) -> str:
    """The prompt the stage's `RLOOTrainer` samples from: its own `apply_chat_template` call, decoded."""
    import trl

    def reward(prompts, completions, **kwargs):
        return [0.0] * len(completions)

    monkeypatch.setattr(trl, "RLOOTrainer", _never_train(trl.RLOOTrainer))
    fields = {"num_generations": 2, "beta": 0.0, "learning_rate": 1e-5, "temperature": 1.0, "max_completion_length": 4,
              "per_device_train_batch_size": 2, "max_steps": 1}
    dataset = rl.instruct_dataset([{"prompt": USER}] * 2, system_prompt)
    trainer = _built_trainer(lambda: rl.train("rloo", "rloo_instruct", fields, model, dataset, [reward],
                                              tmp_path / "rl", None))
    ids = trainer.processing_class.apply_chat_template(
        conversation=[dataset[0]["prompt"]], add_generation_prompt=True, tokenize=True, return_dict=True,
        **trainer.chat_template_kwargs)["input_ids"][0]
    return trainer.processing_class.decode(ids)


def generation_prompts(model: Path, task: str, rows: list[dict], p: params.Params, decoding: str,
                       monkeypatch) -> tuple[list[str], list[dict]]:
    """(the prompts `generate.generate` hands its backend, the rows it writes from one fake sample each)."""
    seen = []

    def backend(model_dir, prompts, d, batch_size, seed, journal=None):
        seen.extend(prompts)
        return iter([(i, 0, "text", 1, 1, "stop") for i in range(len(prompts))])

    monkeypatch.setattr(generation, "generate_transformers", backend)
    rows = generate.generate(model, task, rows, p, decoding)
    return seen, rows


def perplexity_prompt(model: Path, system_prompt: str, monkeypatch) -> str:
    """The prompt text `text_metrics.perplexity` conditions the reference response on."""
    seen = []

    def spy(tokenizer, system, user):
        seen.append(chat_prompt(tokenizer, system, user))
        return seen[-1]

    monkeypatch.setattr(text_metrics, "chat_prompt", spy)
    text_metrics.perplexity(model, system_prompt, [USER], [ANSWER])
    (text,) = seen
    return text


def test_the_fixture_carries_qwens_default_system_turn(qwen_model):
    from transformers import AutoTokenizer

    raw = AutoTokenizer.from_pretrained(qwen_model)
    assert QWEN_DEFAULT in raw.apply_chat_template([{"role": "user", "content": USER}], tokenize=False)


@pytest.mark.parametrize("system_prompt", SYSTEM_PROMPTS)
def test_every_stage_renders_one_prompt(system_prompt, qwen_model, tmp_path, monkeypatch):
    system = f"<|im_start|>system\n{system_prompt}<|im_end|>\n" if system_prompt else ""
    expected = f"{system}<|im_start|>user\n{USER}<|im_end|>\n<|im_start|>assistant\n"
    smoltalk = [{"messages": [{"role": "user", "content": USER}, {"role": "assistant", "content": ANSWER}]}]
    rendered = {
        "sft": sft_prompt(qwen_model, smoltalk, tmp_path, monkeypatch, system_prompt),
        "dpo": dpo_prompt(qwen_model, system_prompt, tmp_path),
        "rl": rl_prompt(qwen_model, system_prompt, tmp_path, monkeypatch),
        "generate": generation_prompts(qwen_model, "instruct", [{"prompt": USER}], _params(system_prompt), "instruct",
                                       monkeypatch)[0][0],
        "perplexity": perplexity_prompt(qwen_model, system_prompt, monkeypatch),
    }
    assert rendered == dict.fromkeys(rendered, expected)
    assert QWEN_DEFAULT not in expected


def test_a_reward_model_reads_the_user_and_assistant_turns_only(qwen_model):
    """A judge and the RL reward show the reward model [user, assistant], without the template's default."""
    from posttrain.training.reward_model import encode, load_scorer

    _, tokenizer = load_scorer(qwen_model)
    ids = encode(tokenizer, [USER], [ANSWER], 256)["input_ids"][0]
    assert tokenizer.decode(ids) == f"<|im_start|>user\n{USER}<|im_end|>\n<|im_start|>assistant\n{ANSWER}<|im_end|>\n"


def test_countdown_prompts_stay_raw_unless_the_decoding_asks_for_the_chat(qwen_model, tmp_path, monkeypatch):
    p = _params("")
    task = {"target": 6, "nums": [1, 2, 3]}
    query = countdown_prompt(p.countdown.prompt_template, task["nums"], task["target"])
    completion = " <answer>1 + 2 + 3</answer>"
    assert sft_prompt(qwen_model, [{"query": query, "completion": completion}], tmp_path, monkeypatch) == query
    assert rl.countdown_dataset([task], p.countdown.prompt_template)[0]["prompt"] == query
    raw, rows = generation_prompts(qwen_model, "countdown", [task], p, "teacher", monkeypatch)
    assert raw == [query] and rows[0]["chat_template"] is False

    teacher = dataclasses.replace(p.generate.teacher, chat_template=True)
    chat = dataclasses.replace(p, generate=dataclasses.replace(p.generate, teacher=teacher))
    prompts, rows = generation_prompts(qwen_model, "countdown", [task], chat, "teacher", monkeypatch)
    assert prompts == [f"<|im_start|>user\n{query}<|im_end|>\n<|im_start|>assistant\n"]
    assert rows[0]["chat_template"] is True and rows[0]["repetition_penalty"] == teacher.repetition_penalty


def test_the_embedded_template_is_left_as_it_is(tiny_model):
    from posttrain.training.base_model import CHAT_TEMPLATE

    assert load_chat_tokenizer(tiny_model).chat_template == CHAT_TEMPLATE


def test_qwen2s_default_system_turn_is_taken_out_too(tiny_model):
    """Qwen2-Instruct's older template writes its default inline, in the loop."""
    tokenizer = load_chat_tokenizer(tiny_model)
    tokenizer.chat_template = (
        "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
        "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
        "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
    without_default_system(tokenizer, "qwen2")
    assert chat_prompt(tokenizer, "", USER) == f"<|im_start|>user\n{USER}<|im_end|>\n<|im_start|>assistant\n"
    assert chat_prompt(tokenizer, "S", USER).startswith("<|im_start|>system\nS<|im_end|>\n")


def test_a_default_that_cannot_be_taken_out_names_the_model_folder(tiny_model, tmp_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    tokenizer.chat_template = (  # the default built from two literals: not the one-literal turn that is taken out
        "{% if messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\n' + 'Be Qwen.<|im_end|>\\n' }}{% endif %}"
        "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
        "'<|im_end|>\\n' }}{% endfor %}")
    tokenizer.save_pretrained(tmp_path / "stubborn")
    with pytest.raises(UserError, match="stubborn: the chat template writes a system turn of its own"):
        load_chat_tokenizer(tmp_path / "stubborn")
