"""train-vision on tiny random Qwen2-VL, Qwen2.5-VL and Idefics3: image tokens never
trained, the loss finite, the adapter saved."""

from __future__ import annotations

import base64
import io
import json

import pytest
from PIL import Image

from model_garden.testing import tiny_idefics3, tiny_qwen2_vl
from model_garden.training.config import TrainConfig
from model_garden.training.run import train


def _image_uri(color: tuple[int, int, int]) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), color).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _dataset(tmp_path, n: int = 4):
    rows = []
    for i in range(n):
        answer = json.dumps({"colour": ["red", "green", "blue", "grey"][i % 4], "index": i})
        content = [{"type": "text", "text": "Describe the image as JSON."}, {"type": "image_url", "image_url": {"url": _image_uri((60 * i, 100, 30))}}]
        rows.append({"messages": [{"role": "user", "content": content}, {"role": "assistant", "content": answer}]})
    path = tmp_path / "vision.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("family", ["qwen2-vl", "qwen2.5-vl", "idefics3"])
def test_train_vision_tiny(tmp_path, family):
    model, processor = {"qwen2-vl": lambda: tiny_qwen2_vl("2"), "qwen2.5-vl": lambda: tiny_qwen2_vl("2.5"), "idefics3": tiny_idefics3}[family]()
    data = _dataset(tmp_path)
    cfg = TrainConfig.from_options(
        base_model=family, dataset=str(data), eval_dataset=str(data), output=str(tmp_path / "out"), vision=True,
        max_steps=2, batch_size=2, report_to="none", bf16="false", mask_strategy="aggressive", eval_steps=2, logging_steps=1,
    )
    result = train(cfg, model=model, processing=processor)
    stats = json.loads((tmp_path / "out/mask_stats.json").read_text())
    assert stats["tokens"]["media"] >= 4 * 4 and "media" not in stats["trained"]
    assert stats["trained"]["string"] > 0 and "key" not in stats["trained"]
    losses = [loss for _, loss in result.metrics["loss"]]
    assert losses and all(0 < x < 100 for x in losses)
    assert len(result.metrics["eval_value_loss"]) == 2  # before training and at step 2
    assert (tmp_path / "out/adapter_model.safetensors").is_file()
