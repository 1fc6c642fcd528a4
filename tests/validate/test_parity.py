import numpy as np

from omniforge.validate.parity import pooled_top1, worst_case


def logits(*winners: int, vocab: int = 4) -> np.ndarray:
    """One row of logits per position, the given token winning at each."""
    return np.eye(vocab, dtype=np.float32)[list(winners)][None]


def test_top1_is_pooled_over_every_position_not_the_worst_case() -> None:
    # A 6-position prompt with 5 agreeing, then a 1-position decode step that disagrees:
    # the worst per-case fraction would be 0, the share of positions that agree is 5/7.
    prompt_ref, prompt_onnx = logits(0, 1, 2, 3, 0, 1), logits(0, 1, 2, 3, 0, 2)
    step_ref, step_onnx = logits(3), logits(2)
    assert pooled_top1([prompt_ref, step_ref], [prompt_onnx, step_onnx]) == 5 / 7


def test_the_worst_error_and_cosine_win_over_shapes() -> None:
    per_shape = {
        "a": {"logits": {"max_abs_error": 0.1, "cosine": 0.999}},
        "b": {"logits": {"max_abs_error": 0.3, "cosine": 0.998}},
    }
    assert worst_case(per_shape) == {"max_abs_error": 0.3, "cosine": 0.998}
