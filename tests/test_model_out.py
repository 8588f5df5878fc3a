"""Artifacts that load anywhere: the adapter names its base by a public name, the run has
a model card, ``--push-to-hub`` uploads the right files (tested with a local stand-in for
the Hub: this machine has no network), and QLoRA is refused where it cannot run.

Run: ``.venv/bin/python -m pytest tests/test_model_out.py -q``
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from model_garden.evaluation.decoded import decoded_eval_factory
from model_garden.inference.loading import load_for_inference
from model_garden.options import ConfigError
from model_garden.training import model_card
from model_garden.training.config import TrainConfig
from model_garden.training.model_setup import quantization
from model_garden.training.run import train

ROWS = [{"messages": [{"role": "user", "content": f"{i} apples. JSON?"}, {"role": "assistant", "content": json.dumps({"fruit": "apple", "n": i})}]} for i in range(6)]


def _data(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    schema = {"type": "object", "properties": {"fruit": {"type": "string"}, "n": {"type": "integer"}}, "required": ["fruit", "n"], "additionalProperties": False}
    (folder / "schema.json").write_text(json.dumps(schema))
    path = folder / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return path


def _run(tmp_path: Path, base: str, **options) -> Path:
    data = _data(tmp_path / "data")
    cfg = TrainConfig.from_options(
        base_model=base, dataset=str(data), eval_dataset=str(data), output=str(tmp_path / "run"), max_steps=2, batch_size=3,
        bf16="false", report_to="none", eval_steps=2, save_steps=2, eval_generate=2, mask_strategy="moderate", **options,
    )
    train(cfg, decoded_eval_factory=decoded_eval_factory)
    return tmp_path / "run"


def test_model_card_and_push_with_a_stand_in_hub(tmp_path, tiny_model_dir):
    run = _run(tmp_path, str(tiny_model_dir))
    card = (run / "README.md").read_text()
    assert card.startswith("---\nbase_model: " + str(tiny_model_dir.resolve()))
    assert "library_name: peft" in card and "Mask strategy `moderate`" in card
    assert "Serve this model with the schema constraint" in card  # keys masked, no structural weight
    assert "field accuracy" in card and "model-garden export" in card and "--engine onnxruntime-genai" in card

    class StandIn:  # records what HfApi would be asked to do
        calls: list = []

        def create_repo(self, repo_id, exist_ok):
            self.calls.append(("create_repo", repo_id, exist_ok))

        def upload_folder(self, repo_id, folder_path, ignore_patterns):
            self.calls.append(("upload_folder", repo_id, folder_path, tuple(ignore_patterns)))
            return type("Info", (), {"commit_url": f"https://hub.example/{repo_id}/commit/1"})()

    hub = StandIn()
    assert model_card.push(run, "me/forms-extractor", api=hub) == "https://hub.example/me/forms-extractor/commit/1"
    assert hub.calls == [("create_repo", "me/forms-extractor", True), ("upload_folder", "me/forms-extractor", str(run), ("checkpoints/*", "logs/*", "*.partial"))]


def test_qlora_is_refused_without_a_cuda_device():
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    with pytest.raises(ConfigError, match="--load-in-4bit needs a CUDA GPU"):
        quantization(TrainConfig.from_options(load_in_4bit=True))
    with pytest.raises(ConfigError, match="drop --full-finetune"):
        quantization(TrainConfig.from_options(load_in_4bit=True, full_finetune=True))


@pytest.mark.slow
def test_adapter_loads_where_the_cache_path_does_not_exist(tmp_path, monkeypatch):
    """Trained on the embedded SmolLM2, the adapter names its public hub id; copied to a
    machine with another cache it still loads (the id resolves to the embedded copy)."""
    run = _run(tmp_path, "smollm2-135m", lora_r=4)
    config = json.loads((run / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert "model-garden" not in json.dumps(config)  # no local cache path anywhere
    assert json.loads((run / "metrics.json").read_text())["base_model_path"].startswith(str(Path.home()))
    elsewhere = tmp_path / "other-machine"
    shutil.copytree(run, elsewhere / "run")
    monkeypatch.setenv("MODEL_GARDEN_CACHE", str(elsewhere / "cache"))
    model, tokenizer = load_for_inference(elsewhere / "run")
    assert (elsewhere / "cache" / "models").is_dir() and len(tokenizer) == 49152
    assert model.config.model_type == "llama"
