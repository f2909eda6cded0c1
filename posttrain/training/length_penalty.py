"""002's length penalty on SFT: L = L_SFT + lambda * E[max(0, len(sample) - len(reference))^2].

How the penalty reaches the weights: the length of a sampled response is a count of tokens and has no
gradient, so the gradient of its expectation is taken with the score-function (REINFORCE) estimator,
grad E[P] = E[(P - b) * grad log pi(sample)]. Every `every` optimizer steps, `samples` prompts of the
current batch are each answered once by the current policy (`temperature`, `max_new_tokens`, stopping
at `<|im_end|>`); each answer's penalty is P = max(0, len(sample) - len(reference))^2, in tokens up to
and including the stop token, against that example's reference completion; and
`weight * mean((P - b) * sum log pi(sample))` is added to the loss of that step, where b, the
baseline, is the mean penalty of those samples: it lowers the variance, and since it includes the
sample itself it scales the expected gradient by (n - 1) / n. Minimising the term lowers the
log-probability of the samples that overshoot their reference more than the others do and raises
that of the rest. Only its gradient enters the loss: the logged `loss` stays L_SFT, and the penalty
is logged as `length_penalty` (with `sampled_length` and `reference_length`). With gradient
accumulation, each micro-batch of that step adds its own term, averaged over them. 002 gives the
loss, not the estimator: the estimator is ours.
"""

from __future__ import annotations

import torch
from trl import SFTTrainer
from trl.models.utils import unwrap_model_for_generation

from posttrain.errors import UserError

IGNORE = -100  # the label of a token that is not scored


def check(penalty, where: str) -> None:
    """Refuse settings under which the term would be meaningless, naming the parameter.

    `penalty` is a length-penalty section: `weight`, `every`, `samples`, `temperature`, `max_new_tokens`.
    """
    if penalty.weight < 0:
        raise UserError(f"params: `{where}.weight` must be at least 0, got {penalty.weight}")
    if penalty.every < 1:
        raise UserError(f"params: `{where}.every` must be at least 1, got {penalty.every}")
    if penalty.samples < 2:  # one sample is its own baseline: the term would always be zero
        raise UserError(f"params: `{where}.samples` must be at least 2, got {penalty.samples}")
    if penalty.temperature <= 0:
        raise UserError(f"params: `{where}.temperature` must be above 0 (REINFORCE needs samples), "
                        f"got {penalty.temperature}")
    if penalty.max_new_tokens < 1:
        raise UserError(f"params: `{where}.max_new_tokens` must be at least 1, got {penalty.max_new_tokens}")


def response_lengths(ids: torch.Tensor, mask: torch.Tensor, stop_id: int) -> torch.Tensor:
    """Tokens of each row's response (the `mask`ed positions) up to and including its first stop token.

    A row without a stop token counts all its response tokens. The chat template writes `<|im_end|>\n`
    after a reference answer; counting through the stop token measures it as a sample is measured.
    """
    is_stop = (ids == stop_id) & mask
    through = mask.long().cumsum(-1).gather(-1, is_stop.long().argmax(-1, keepdim=True)).squeeze(-1)
    return torch.where(is_stop.any(-1), through, mask.long().sum(-1))


def excess_length_penalty(sampled: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """max(0, len(sample) - len(reference))^2 per sample: only overshooting the reference costs."""
    return (sampled - reference).clamp(min=0).float().square()


def reinforce_surrogate(log_probs: torch.Tensor, penalties: torch.Tensor) -> torch.Tensor:
    """mean((P - b) * log pi(sample)), b the mean penalty: its gradient estimates grad E[P] (times (n-1)/n)."""
    advantages = (penalties - penalties.mean()).detach()
    return (advantages * log_probs).mean()


def left_pad(rows: list[torch.Tensor], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts padded on the left, as generation needs them, and their attention mask."""
    ids = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=pad_id, padding_side="left")
    mask = torch.nn.utils.rnn.pad_sequence([torch.ones_like(r) for r in rows], batch_first=True,
                                           padding_value=0, padding_side="left")
    return ids, mask


class LengthPenaltySFTTrainer(SFTTrainer):
    """`SFTTrainer` whose loss gains the length-penalty term (module docstring) every `every` steps."""

    def __init__(self, *args, length_penalty, **kwargs):  # a section as `check` takes
        super().__init__(*args, **kwargs)
        self.length_penalty = length_penalty
        self.stop_id = self.processing_class.convert_tokens_to_ids(self.args.eos_token)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if return_outputs or not model.training or self.state.global_step % self.length_penalty.every:
            return loss
        # As TRL does for its aux loss: with `num_items_in_batch`, Trainer leaves the average over the
        # accumulated micro-batches to the loss
        steps = self.current_gradient_accumulation_steps if num_items_in_batch is not None else 1
        surrogate = self.penalty_surrogate(model, inputs)
        # Only the surrogate's gradient means something: the logged loss stays L_SFT, and the penalty
        # itself is logged as `length_penalty`
        return loss + self.length_penalty.weight * (surrogate - surrogate.detach()) / steps

    def penalty_surrogate(self, model, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Sample answers to the first `samples` prompts of the batch; their REINFORCE surrogate."""
        lp = self.length_penalty
        ids, labels = inputs["input_ids"][: lp.samples], inputs["labels"][: lp.samples]
        scored = labels != IGNORE
        # Rows are right-padded; the prompt ends at the first scored token (a row truncated inside
        # its prompt has none, and all of it is prompt)
        prompt_lens = torch.where(scored.any(-1), scored.long().argmax(-1),
                                  inputs["attention_mask"][: lp.samples].sum(-1))
        reference = response_lengths(ids, scored, self.stop_id)
        pad_id = self.processing_class.pad_token_id  # SFTTrainer sets one
        prompt_ids, prompt_mask = left_pad([row[:n] for row, n in zip(ids, prompt_lens)], pad_id)
        with torch.no_grad(), unwrap_model_for_generation(model, self.accelerator) as policy:
            sequences = policy.generate(
                input_ids=prompt_ids, attention_mask=prompt_mask, do_sample=True, temperature=lp.temperature,
                top_k=0, top_p=1.0, max_new_tokens=lp.max_new_tokens, eos_token_id=self.stop_id,
                pad_token_id=pad_id, use_cache=True)
        sample = sequences[:, prompt_ids.shape[1]:]
        sampled = response_lengths(sample, torch.ones_like(sample, dtype=torch.bool), self.stop_id)
        in_sample = torch.arange(sample.shape[1], device=sample.device) < sampled[:, None]
        attention = torch.cat([prompt_mask, in_sample.long()], dim=1)
        sample_labels = torch.cat([torch.full_like(prompt_ids, IGNORE), sample.masked_fill(~in_sample, IGNORE)], 1)
        # Positions count from each prompt's first token, as they did when the sample was generated
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        log_probs = model(input_ids=sequences, attention_mask=attention, position_ids=positions,
                          labels=sample_labels, fused_lm_head=True).log_probs.sum(-1)
        penalties = excess_length_penalty(sampled, reference)
        for name, value in [("length_penalty", penalties), ("sampled_length", sampled),
                            ("reference_length", reference)]:
            mean = self.accelerator.gather_for_metrics(value.float().mean()[None]).mean().item()
            self._metrics["train"][name].append(mean)
        return reinforce_surrogate(log_probs, penalties)
