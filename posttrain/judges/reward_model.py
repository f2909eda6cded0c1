"""A local one-output sequence classifier as a judge, by folder: the pipeline's own reward models, or an
off-the-shelf one such as `OpenAssistant/reward-model-deberta-v3-large` pulled to a folder
(`posttrain.training.reward_model.encode` gives a tokenizer without a chat template the text pair
`[CLS] prompt [SEP] response [SEP]`); batched, cut at the model's maximum length. It scores through
`posttrain.training.reward_model.score_with`, as RL and the reward-model stage do, so a response gets one
reward whoever asks.
"""

from __future__ import annotations

from collections.abc import Sequence

from posttrain.data_io import require_model_dir
from posttrain.judges.base import same_length


class RewardModelJudge:
    """A one-output sequence classifier; `max_length` caps the model's own limit (None: the model's)."""

    name = "reward_model"

    def __init__(self, model: str, batch_size: int = 32, max_length: int | None = None):
        from posttrain.training.reward_model import load_scorer

        require_model_dir(model, "--model")  # a folder a stage made (a trained or pulled model), never a hub id
        self.model = model
        self.batch_size = batch_size
        self._model, self._tokenizer = load_scorer(model)
        limit = min(self._tokenizer.model_max_length,
                    getattr(self._model.config, "max_position_embeddings", None) or 10**9)
        self.max_length = limit if max_length is None else min(limit, max_length)

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
        from posttrain.training.reward_model import score_with

        same_length(prompts, responses)
        return score_with(self._model, self._tokenizer, prompts, responses, self.batch_size, self.max_length)
