"""Span parsing, IoU and the grounding metrics on hand-checked cases.

Run: ``.venv/bin/python -m pytest tests/test_vtg_metrics.py -q``
"""

from __future__ import annotations

import pytest

from model_garden.vtg.metrics import grounding_metrics, parse_span, span_ious, temporal_iou


@pytest.mark.parametrize(
    ("text", "span"),
    [
        ("[12.3, 20.0]", (12.3, 20.0)),
        ("[12.3,20]", (12.3, 20.0)),
        ("(3.5, 7)", (3.5, 7.0)),
        ("12.3 - 20.0 seconds", (12.3, 20.0)),
        ("12.3-20.0", (12.3, 20.0)),
        ("from 12.3 to 20", (12.3, 20.0)),
        ("The event happens in the 24.3 - 30.4 seconds.", (24.3, 30.4)),
        ("It starts at 12.3 seconds and ends at 20 seconds", None),
        ("between 5 and 9 seconds", (5.0, 9.0)),
        ("12.3s to 20s", (12.3, 20.0)),
        ("12.3 seconds to 20 seconds", (12.3, 20.0)),
        ("00:12 - 00:20", (12.0, 20.0)),
        ("01:05 to 02:10.5", (65.0, 130.5)),
        ("00:01:05 - 01:00:00", (65.0, 3600.0)),
        ("[.5, 2]", (0.5, 2.0)),
        ("I cannot tell.", None),
        ("", None),
        ("It happens at 12 seconds.", None),
    ],
)
def test_parse_span_forms(text, span):
    assert parse_span(text) == (pytest.approx(span) if span else None)


def test_parse_span_swaps_reversed_and_clips_to_duration():
    assert parse_span("[20.0, 12.3]") == (12.3, 20.0)
    assert parse_span("from 25 to 40 seconds", duration=30.0) == (25.0, 30.0)
    assert parse_span("[31, 35]", duration=30.0) == (30.0, 30.0)  # wholly past the end: empty
    assert parse_span("00:40 - 00:10", duration=30.0) == (10.0, 30.0)


def test_parse_span_temporal_tokens():
    # 100 bins over 30 s: bin k is [0.3k, 0.3k + 0.3), read at its centre.
    assert parse_span("<|box_start|><12><40><|box_end|>", duration=30.0, num_bins=100) == pytest.approx((3.75, 12.15))
    assert parse_span("<12><40>", duration=30.0, num_bins=100) == pytest.approx((3.75, 12.15))  # box tokens skipped in decoding
    assert parse_span("<|box_start|><40><12><|box_end|>", duration=30.0, num_bins=100) == pytest.approx((3.75, 12.15))
    assert parse_span("<|box_start|><0><9><|box_end|>", duration=10.0, num_bins=10) == pytest.approx((0.5, 9.5))
    assert parse_span("<|box_start|><3><10><|box_end|>", duration=10.0, num_bins=10) is None  # no bin 10
    with pytest.raises(ValueError, match="pass duration and num_bins"):
        parse_span("<12><40>", num_bins=100)


@pytest.mark.parametrize(
    ("a", "b", "iou"),
    [
        ((0, 10), (5, 15), 5 / 15),
        ((2, 4), (0, 10), 0.2),
        ((0, 10), (0, 10), 1.0),
        ((15, 5), (5, 15), 1.0),  # reversed: swapped
        ((0, 10), (10, 20), 0.0),  # touching
        ((0, 5), (8, 20), 0.0),  # apart
        ((5, 5), (0, 10), 0.0),  # empty prediction inside the gold span
        ((5, 5), (5, 5), 0.0),  # empty spans cover no time
        ((24.3, 30.4), (24.3, 30.4), 1.0),
    ],
)
def test_temporal_iou(a, b, iou):
    assert temporal_iou(a, b) == pytest.approx(iou)
    assert temporal_iou(b, a) == pytest.approx(iou)


def test_grounding_metrics_hand_checked():
    gold = [(5, 15), (0, 10), (0, 10), (0, 10), (5, 15), (0, 10), (0, 10), (2.1, 12.1)]
    preds = [(0, 10), (2, 4), (0, 6), None, (15, 5), (5, 5), (10, 20), (2.1, 9.1)]
    # IoUs: 1/3, 0.2, 0.6, 0 (unparsed), 1, 0 (empty), 0 (touching), 0.7
    assert span_ious(preds, gold) == pytest.approx([1 / 3, 0.2, 0.6, 0.0, 1.0, 0.0, 0.0, 0.7])
    metrics = grounding_metrics(preds, gold)
    assert metrics == {
        "r1@0.3": 50.0,  # 1/3, 0.6, 1, 0.7
        "r1@0.5": 37.5,  # 0.6, 1, 0.7
        "r1@0.7": 25.0,  # 1, 0.7
        "miou": pytest.approx(100 * (1 / 3 + 0.2 + 0.6 + 1 + 0.7) / 8),
        "n": 8,
        "n_unparsed": 1,
    }


def test_an_iou_exactly_at_a_threshold_reaches_it_despite_rounding():
    # (0.3 - 0.1) / (0.5 - 0.1) is 0.49999999999999994 in floating point.
    assert temporal_iou((0.1, 0.3), (0.1, 0.5)) < 0.5
    assert grounding_metrics([(0.1, 0.3)], [(0.1, 0.5)])["r1@0.5"] == 100.0


def test_unparsed_answers_stay_in_the_denominator():
    metrics = grounding_metrics([None, None, (0, 10)], [(0, 10)] * 3)
    assert metrics["r1@0.7"] == pytest.approx(100 / 3) and metrics["miou"] == pytest.approx(100 / 3)
    assert metrics["n"] == 3 and metrics["n_unparsed"] == 2


def test_grounding_metrics_rejects_bad_input():
    with pytest.raises(ValueError, match="2 predictions for 1 ground-truth spans"):
        grounding_metrics([(0, 1), (0, 1)], [(0, 1)])
    with pytest.raises(ValueError, match=r"ground truth 1 has start >= end: \(4, 4\)"):
        grounding_metrics([(0, 1), (0, 1)], [(0, 1), (4, 4)])
    with pytest.raises(ValueError, match="no predictions"):
        grounding_metrics([], [])


def test_parsed_answers_score_end_to_end():
    answers = ["[24.3, 29.4]", "The event happens in the 20.0 - 30.0 seconds.", "no idea", "<|box_start|><0><49><|box_end|>"]
    gold = [(24.3, 29.4), (25.0, 30.0), (1.0, 2.0), (0.0, 15.0)]
    preds = [parse_span(a, duration=30.0, num_bins=100) for a in answers]
    # IoUs: 1, 5/10, 0, (14.85 - 0.15) / 15 (bins 0 and 49 read as 0.15 and 14.85 s)
    assert span_ious(preds, gold) == pytest.approx([1.0, 0.5, 0.0, 14.7 / 15])
    assert grounding_metrics(preds, gold)["r1@0.5"] == 75.0
