"""The design notes' names work as the notes use them."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from model_garden.masking import MaskConfig, build_example
from model_garden.selective_loss import (
    LabelMasker,
    SelectiveLossSFTTrainer,
    SelectiveLossVisionDataCollator,
    StructuredOutputDataCollator,
)
from model_garden.vision_training import VisionLanguageTrainer

EXAMPLE = Path(__file__).resolve().parents[1] / "model_garden/assets/example.jsonl"


def _chats() -> list[list[dict]]:
    return [json.loads(line)["messages"] for line in EXAMPLE.read_text(encoding="utf-8").splitlines()]


def test_label_masker_on_foreign_labels_equals_exact_masks(smollm2_tokenizer):
    """Labels from another collator (response-only) become exactly the engine's masks."""
    for strategy in ("conservative", "moderate", "aggressive"):
        masker = LabelMasker(smollm2_tokenizer, MaskConfig(strategy=strategy))
        for chat in _chats():
            plain = build_example(smollm2_tokenizer, chat, MaskConfig())
            exact = build_example(smollm2_tokenizer, chat, MaskConfig(strategy=strategy))
            labels, weights = masker.mask_batch(torch.tensor([plain["input_ids"]]), torch.tensor([plain["labels"]]))
            assert labels[0].tolist() == exact["labels"], strategy
            assert weights[0].tolist() == exact["loss_weights"]
        assert masker.fallbacks == 0


def test_label_masker_notes_entry_point(smollm2_tokenizer):
    masker = LabelMasker(smollm2_tokenizer, conservative=True)
    example = masker.mask_structural_tokens({"messages": _chats()[0]})
    assert example["labels"] == build_example(smollm2_tokenizer, _chats()[0], MaskConfig("conservative"))["labels"]
    assert LabelMasker(smollm2_tokenizer, conservative=False).cfg.strategy == "moderate"


def test_vision_collator_native_path_masks_like_the_engine():
    from model_garden.testing import tiny_qwen2_vl

    _, processor = tiny_qwen2_vl("2")
    from PIL import Image

    chat = [
        {"role": "user", "content": [{"type": "image", "image": Image.new("RGB", (64, 64), "red")}, {"type": "text", "text": "JSON?"}]},
        {"role": "assistant", "content": '{"colour": "red", "n": 1}'},
    ]
    collator = SelectiveLossVisionDataCollator(None, processor, mask_structural_tokens=True, conservative_masking=False)
    batch = collator([{"messages": chat}, {"messages": chat[:1] + [{"role": "assistant", "content": '{"colour": "red"}'}]}])
    exact = build_example(processor, chat, MaskConfig("moderate"))
    n = len(exact["input_ids"])
    assert batch["labels"][0, :n].tolist() == exact["labels"]
    assert batch["image_grid_thw"].shape == (2, 3) and batch["pixel_values"].shape[0] == 2 * 16
    assert isinstance(collator, StructuredOutputDataCollator)


def test_trainer_accepts_the_notes_arguments(tmp_path, smollm2_tokenizer):
    from transformers import TrainingArguments

    from model_garden.testing import tiny_text_model

    trainer = SelectiveLossSFTTrainer(
        model=tiny_text_model(smollm2_tokenizer),
        tokenizer=smollm2_tokenizer,
        args=TrainingArguments(str(tmp_path), report_to=[], use_cpu=True),
        data_collator=StructuredOutputDataCollator(processing=smollm2_tokenizer),
        use_selective_loss=True,
    )
    assert trainer.processing_class is smollm2_tokenizer and trainer.use_selective_loss


def test_vision_language_trainer_trains_tiny_qwen2_vl(tmp_path):
    from model_garden.testing import tiny_qwen2_vl

    data = tmp_path / "v.jsonl"
    rows = []
    for colour in ("red", "blue"):
        import base64
        import io

        from PIL import Image

        buf = io.BytesIO()
        Image.new("RGB", (64, 64), colour).save(buf, format="PNG")
        uri = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
        rows.append({"messages": [
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": uri}}, {"type": "text", "text": "Colour as JSON"}]},
            {"role": "assistant", "content": json.dumps({"Couleur": {"contents": colour, "confidence_score": None}})},
        ]})
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    trainer = VisionLanguageTrainer("tiny-qwen2-vl", use_selective_loss=True, semantic_token_patterns=[r'"contents":\s*"([^"]*)"'])
    trainer.model, trainer.processor = tiny_qwen2_vl("2")
    assert trainer.use_selective_loss and trainer.semantic_patterns
    result = trainer.train(data, tmp_path / "out", max_steps=2, batch_size=2, report_to="none", bf16="false")
    stats = json.loads((tmp_path / "out/mask_stats.json").read_text())
    assert stats["trained"].get("string", 0) > 0 and "key" not in stats["trained"] and "punct" not in stats["trained"]
    assert result.metrics["steps"] == 2
