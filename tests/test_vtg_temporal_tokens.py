"""Temporal bin tokens: seconds <-> bins, and adding the tokens to a tokenizer and model.

Run: ``.venv/bin/python -m pytest tests/test_vtg_temporal_tokens.py -q``
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from model_garden.vtg.temporal_tokens import (
    add_temporal_tokens,
    bins_to_seconds,
    format_span_tokens,
    seconds_to_bins,
    span_to_tokens,
)


def test_seconds_to_bins_hand_checked():
    assert seconds_to_bins(0.0, 10.0, 10.0, 10) == (0, 9)  # the end of the video is in the last bin
    assert seconds_to_bins(2.5, 7.49, 10.0, 10) == (2, 7)
    assert seconds_to_bins(3.0, 3.0, 10.0, 10) == (3, 3)
    assert seconds_to_bins(-1.0, 12.0, 10.0, 10) == (0, 9)  # outside the video: clipped
    assert seconds_to_bins(24.3, 30.4, 30.96, 100) == (78, 98)  # 24.3 / 0.3096 = 78.5, 30.4 / 0.3096 = 98.2
    # Times on a bin edge belong to the bin they start, even when division rounds down.
    assert [seconds_to_bins(t, t, 30.0, 100)[0] for t in (5.1, 8.7, 10.2, 20.4)] == [17, 29, 34, 68]


def test_bins_to_seconds_gives_bin_centres():
    assert bins_to_seconds(2, 7, 10.0, 10) == pytest.approx((2.5, 7.5))
    assert bins_to_seconds(0, 99, 30.0, 100) == pytest.approx((0.15, 29.85))
    assert bins_to_seconds(-3, 120, 30.0, 100) == pytest.approx((0.15, 29.85))


@given(
    duration=st.floats(0.5, 3600.0),
    fraction=st.floats(0.0, 1.0),
    num_bins=st.integers(2, 300),
)
def test_round_trip_moves_a_time_by_at_most_half_a_bin(duration, fraction, num_bins):
    t = fraction * duration
    back, _ = bins_to_seconds(*seconds_to_bins(t, t, duration, num_bins), duration, num_bins)
    assert abs(back - t) <= duration / num_bins / 2 + 1e-9
    assert seconds_to_bins(back, back, duration, num_bins) == seconds_to_bins(t, t, duration, num_bins)


def test_span_tokens_text():
    assert format_span_tokens(3, 17) == "<|box_start|><3><17><|box_end|>"
    assert span_to_tokens(24.3, 30.4, 30.96) == "<|box_start|><78><98><|box_end|>"


def test_bad_duration_or_bins_are_refused():
    with pytest.raises(ValueError, match="duration must be positive"):
        seconds_to_bins(1.0, 2.0, 0.0)
    with pytest.raises(ValueError, match="num_bins must be at least 1"):
        bins_to_seconds(1, 2, 10.0, 0)


@pytest.fixture
def tokenizer():
    from model_garden.models import load_processing

    return load_processing("smollm2-135m")  # a fresh object: the tests add tokens to it


def test_add_temporal_tokens_to_tokenizer_and_model(tokenizer):
    import torch

    from model_garden.testing.models import tiny_text_model

    model = tiny_text_model(tokenizer)
    before = model.get_input_embeddings().weight.detach().clone()
    known = len(tokenizer)
    ids = add_temporal_tokens(tokenizer, model, num_bins=100)

    assert ids == tokenizer.convert_tokens_to_ids([f"<{k}>" for k in range(100)])
    assert len(tokenizer) == known + 102  # 100 bins + <|box_start|> + <|box_end|>
    text = "<|box_start|><12><40><|box_end|>"
    encoded = tokenizer.encode(text, add_special_tokens=False)
    assert tokenizer.convert_ids_to_tokens(encoded) == ["<|box_start|>", "<12>", "<40>", "<|box_end|>"]
    assert tokenizer.decode(encoded, skip_special_tokens=True) == "<12><40>"  # bins survive; box tokens are special

    weights = model.get_input_embeddings().weight
    assert weights.shape[0] == len(tokenizer)
    assert model.get_output_embeddings().weight is weights  # still tied after the resize
    assert torch.equal(weights[:known], before[:known])
    spelled = [tokenizer.convert_tokens_to_ids(d) for d in ("3", "7")]
    assert torch.allclose(weights[tokenizer.convert_tokens_to_ids("<37>")], before[spelled].mean(dim=0))
    assert torch.allclose(weights[tokenizer.convert_tokens_to_ids("<5>")], before[tokenizer.convert_tokens_to_ids("5")])
    assert torch.allclose(weights[tokenizer.convert_tokens_to_ids("<|box_end|>")], before[:known].mean(dim=0))

    # A second call adds nothing and does not reset rows that may have been trained.
    with torch.no_grad():
        weights[ids[37]] = 1.0
    assert add_temporal_tokens(tokenizer, model, num_bins=100) == ids
    assert len(tokenizer) == known + 102 and bool((model.get_input_embeddings().weight[ids[37]] == 1.0).all())


def test_padded_embeddings_are_not_shrunk_and_untied_heads_are_set(tokenizer):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    rows = len(tokenizer) + 256  # like Qwen2-VL: more rows than tokens
    config = LlamaConfig(vocab_size=rows, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    head_before = model.get_output_embeddings().weight.detach().clone()
    ids = add_temporal_tokens(tokenizer, model, num_bins=10)
    assert max(ids) < rows and model.get_input_embeddings().weight.shape[0] == rows
    head = model.get_output_embeddings().weight
    nine = tokenizer.convert_tokens_to_ids("9")
    assert torch.allclose(head[tokenizer.convert_tokens_to_ids("<9>")], head_before[nine])
    assert not torch.allclose(head[ids[9]], model.get_input_embeddings().weight[ids[9]])  # each table from its own rows


def test_tokenizer_first_then_model(tokenizer):
    import torch

    from model_garden.testing.models import tiny_text_model

    model = tiny_text_model(tokenizer)  # sized for the tokenizer without the new tokens
    before = model.get_input_embeddings().weight.detach().clone()
    ids = add_temporal_tokens(tokenizer, num_bins=10)
    assert add_temporal_tokens(tokenizer, model, num_bins=10) == ids
    weights = model.get_input_embeddings().weight
    assert weights.shape[0] == len(tokenizer)
    assert torch.allclose(weights[ids[7]], before[tokenizer.convert_tokens_to_ids("7")])  # rows new to the model are set


def test_tokens_already_in_the_vocabulary_are_kept(tokenizer):
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|box_start|>", "<|box_end|>"]})
    box = tokenizer.convert_tokens_to_ids("<|box_start|>")
    ids = add_temporal_tokens(tokenizer, num_bins=5)
    assert tokenizer.convert_tokens_to_ids("<|box_start|>") == box
    assert ids == list(range(ids[0], ids[0] + 5))
