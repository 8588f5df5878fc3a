"""The VTG training path on tiny generated videos and a tiny random Qwen2.5-VL: the
processor loaded without torchvision, ``SFTCollator``'s masks, ``train-vtg`` (Python API
and CLI, with and without temporal tokens), ``predict-vtg`` and ``evaluate-vtg``.

Run: ``.venv/bin/python -m pytest tests/test_vtg_training.py -q``
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from model_garden.cli import app
from model_garden.models import load_model, load_processing, peft_quietly
from model_garden.testing import tiny_qwen2_vl
from model_garden.training.config import TrainConfig
from model_garden.vision_compat import QwenVideoProcessorPil, load_vision_processor
from model_garden.vtg.config import VTGConfig, load_vtg_config
from model_garden.vtg.dataset import VideoTemporalSFTDataset
from model_garden.vtg.temporal_tokens import BOX_END, BOX_START, add_temporal_tokens
from model_garden.vtg.train import train_vtg
from model_garden.vtg.video import write_synthetic_video
from vtg_datasets.collate_fns import SFTCollator

QUERIES = "AAAAA 0.5 2.0##a person opens a door.\nBBBBB 1.0 3.5##a person sits down on the old sofa in the corner.\nCCCCC 0.0 1.5##person turns on the light.\nAAAAA 1.0 3.0##someone walks in.\n"
DURATIONS = {"AAAAA": 3.0, "BBBBB": 4.0, "CCCCC": 2.5}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> SimpleNamespace:
    """Three tiny mp4 files, four Charades-STA queries and their durations CSV."""
    root = tmp_path_factory.mktemp("vtg")
    for vid, seconds in DURATIONS.items():
        write_synthetic_video(root / f"{vid}.mp4", seconds=seconds, fps=8, size=64)
    (root / "ann.txt").write_text(QUERIES, encoding="utf-8")
    (root / "durations.csv").write_text("id,length\n" + "".join(f"{v},{s}\n" for v, s in DURATIONS.items()), encoding="utf-8")
    return SimpleNamespace(videos=root, ann=root / "ann.txt", durations=root / "durations.csv")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> SimpleNamespace:
    """A random Qwen2.5-VL and its processor, and the folder they were saved to."""
    model, processor = tiny_qwen2_vl("2.5")
    path = tmp_path_factory.mktemp("tiny-qwen2.5-vl")
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return SimpleNamespace(path=path, model=model.eval(), processor=processor)


def _video_chat(processor, frames) -> dict:
    chat = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "When does it turn red?"}]}]
    text = processor.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    return processor(text=[text], videos=[frames], return_tensors="pt")


def test_saved_qwen_folder_loads_without_torchvision(tiny, corpus, tmp_path):
    from model_garden.vtg.video import read_frames

    frames = read_frames(corpus.videos / "AAAAA.mp4", 4).frames
    expected = _video_chat(tiny.processor, frames)
    loaded = load_processing(str(tiny.path))
    assert isinstance(loaded.video_processor, QwenVideoProcessorPil)
    got = _video_chat(loaded, frames)
    assert got["input_ids"].tolist() == expected["input_ids"].tolist()
    assert got["input_ids"][0].tolist().count(loaded.video_token_id) == 8  # 4 frames: 2 x 2x2 merged patches
    assert torch.equal(got["pixel_values_videos"], expected["pixel_values_videos"])
    saved = json.loads((tiny.path / "processor_config.json").read_text())["video_processor"]
    assert saved["video_processor_type"] == "Qwen2VLVideoProcessor"  # what torchvision machines load
    model = load_model(str(tiny.path), vision=True).eval()
    with torch.no_grad():
        assert torch.allclose(model(**got).logits, tiny.model(**expected).logits, atol=1e-5)

    # A hub-style folder: image settings in preprocessor_config.json, no video config.
    hub = tmp_path / "hub"
    hub.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny.path / name, hub / name)
    (hub / "chat_template.json").write_text(json.dumps({"chat_template": tiny.processor.chat_template}))
    image_settings = {k: v for k, v in tiny.processor.image_processor.to_dict().items() if k in ("size", "patch_size", "temporal_patch_size", "merge_size", "image_mean", "image_std")}
    (hub / "preprocessor_config.json").write_text(
        json.dumps({**image_settings, "image_processor_type": "Qwen2VLImageProcessor", "processor_class": "Qwen2_5_VLProcessor"})
    )
    assert _video_chat(load_processing(str(hub), vision=True), frames)["input_ids"].tolist() == expected["input_ids"].tolist()


@pytest.fixture
def pad_is_end_of_turn(tiny):
    """The processor with its pad token set to ``<|im_end|>``, as in SmolLM2-style tokenizers."""
    tokenizer = tiny.processor.tokenizer
    pad = tokenizer.pad_token
    tokenizer.pad_token = "<|im_end|>"
    yield tiny.processor
    tokenizer.pad_token = pad


def test_sft_collator_trains_only_the_answer_and_its_end_of_turn(tiny, corpus, pad_is_end_of_turn):
    tokenizer = tiny.processor.tokenizer
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    # Padding must be masked by position: with pad == end-of-turn, masking by id would also
    # mask the end of turn the model has to learn.
    assert tokenizer.pad_token_id == im_end
    data = VideoTemporalSFTDataset(corpus.ann, corpus.videos, durations_file=corpus.durations, num_frames=4, template_seed=0)
    items = [data[0], data[1]]
    batch = SFTCollator(pad_is_end_of_turn, max_length=None)(items)
    ids, labels, attention = batch["input_ids"], batch["labels"], batch["attention_mask"]
    lengths = attention.sum(1).tolist()
    assert lengths[0] != lengths[1]  # one row is padded
    for row, item in enumerate(items):
        trained = labels[row] != -100
        assert tokenizer.decode(ids[row][trained]) == item["messages"][1]["content"] + "<|im_end|>"
        assert (labels[row][ids[row] == tiny.processor.video_token_id] == -100).all()
        assert (ids[row] == tiny.processor.video_token_id).sum() == 8
        first = int(trained.nonzero()[0])
        assert (labels[row][:first] == -100).all()  # system and user turns, role headers
        assert labels[row][lengths[row] - 2] == im_end  # the answer's <|im_end|>, then "\n"
        assert (labels[row][lengths[row]:] == -100).all() and (ids[row][lengths[row]:] == im_end).all()
    # Qwen2.5-VL's temporal patch spans 2 frames: 2 / (4 frames / 3.0 s) and 2 / (4 / 4.0 s).
    assert batch["second_per_grid_ts"].tolist() == pytest.approx([1.5, 2.0])
    assert batch["video_grid_thw"].tolist() == [[2, 4, 4], [2, 4, 4]]


def test_train_vtg_api_trains_and_saves_the_temporal_token_rows(tiny, corpus, tmp_path):
    from peft import PeftModel

    model, processor = tiny_qwen2_vl("2.5")
    bins = add_temporal_tokens(processor, model, num_bins=10)
    ids = [*bins, *processor.tokenizer.convert_tokens_to_ids([BOX_START, BOX_END])]
    initial = model.get_input_embeddings().weight[ids].detach().clone()
    cfg = TrainConfig.from_options(output=str(tmp_path / "out"), max_steps=2, batch_size=2, report_to="none", bf16="false", logging_steps=1, lr=1e-2)
    vtg = VTGConfig(annotations=str(corpus.ann), video_dir=str(corpus.videos), durations=str(corpus.durations), use_temporal_tokens=True, num_time_bins=10, num_frames=4)
    result = train_vtg(cfg, vtg, model=model, processor=processor)

    out = Path(result.output)
    assert [step for step, _ in result.metrics["loss"]] == [1, 2] and all(0 < loss < 100 for _, loss in result.metrics["loss"])
    stats = json.loads((out / "mask_stats.json").read_text())
    assert "media" not in stats["trained"] and stats["trained"]["end_of_turn"] == stats["tokens"]["end_of_turn"] == 4
    assert json.loads((out / "adapter_config.json").read_text())["trainable_token_indices"] == sorted(ids)
    assert VTGConfig.load(out / "vtg_config.yaml") == VTGConfig(**{**vtg.__dict__, "template_seed": 0})

    trained = model.get_input_embeddings().weight[ids].detach()
    assert not torch.allclose(trained, initial)  # the new rows did train
    fresh = load_model(str(tiny.path), vision=True)  # the same random base model
    with peft_quietly():
        reloaded = PeftModel.from_pretrained(fresh, out).merge_and_unload().eval()
    assert torch.allclose(reloaded.get_input_embeddings().weight[ids], trained)
    assert torch.equal(reloaded.get_output_embeddings().weight[ids], reloaded.get_input_embeddings().weight[ids])  # tied
    data = vtg.dataset(corpus.ann, corpus.durations, seed=0, random=True)
    saved_processor = load_vision_processor(out)
    assert saved_processor.tokenizer.convert_tokens_to_ids("<9>") == bins[9]
    batch = SFTCollator(saved_processor)([data[0]])
    inputs = {k: v for k, v in batch.items() if k not in ("labels", "loss_weights", "token_classes")}
    with torch.no_grad():
        assert torch.allclose(reloaded(**inputs).logits, model.eval()(**inputs).logits, atol=1e-4)


def _invoke(args: list[str]) -> str:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


@pytest.mark.integration
@pytest.mark.parametrize("variant", ["seconds-as-images", "temporal-tokens-video"])
def test_cli_train_predict_evaluate(tiny, corpus, tmp_path, variant):
    from model_garden.inference.loading import load_for_inference

    out, preds = tmp_path / "run", tmp_path / "preds.jsonl"
    data = ["--annotations", corpus.ann, "--durations", corpus.durations, "--video-dir", corpus.videos]
    # 300 bins outgrow the 151,936 embedding rows: the model is resized, in training and at load.
    extra = ["--use-temporal-tokens", "--num-time-bins", 300] if variant.startswith("temporal") else ["--frames-as", "images"]
    _invoke(["train-vtg", "--base-model", tiny.path, *data, "--num-frames", 4, *extra, "--output", out,
             "--max-steps", 2, "--batch-size", 2, "--report-to", "none", "--bf16", "false", "--logging-steps", 1])
    assert len(json.loads((out / "metrics.json").read_text())["loss"]) == 2
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == str(tiny.path.resolve())

    printed = _invoke(["predict-vtg", "--model", out, *data, "--out", preds, "--batch-size", 2, "--max-new-tokens", 4])
    rows = [json.loads(line) for line in preds.read_text().splitlines()]
    assert [r["index"] for r in rows] == [0, 1, 2, 3] and all(isinstance(r["output"], str) for r in rows)
    bins = ["--num-bins", 300] if variant.startswith("temporal") else []
    assert ("--num-bins 300" in printed) == bool(bins)
    _invoke(["evaluate-vtg", "--predictions", preds, "--annotations", corpus.ann, "--durations", corpus.durations, *bins])
    report = json.loads(preds.with_suffix(".report.json").read_text())
    assert set(report["metrics"]) == {"r1@0.3", "r1@0.5", "r1@0.7", "miou", "n", "n_unparsed"} and report["metrics"]["n"] == 4

    if variant.startswith("temporal"):
        model, processor = load_for_inference(out)
        assert processor.tokenizer.tokenize("<299>") == ["<299>"]
        new = processor.tokenizer.convert_tokens_to_ids([f"<{k}>" for k in range(300)])
        assert model.get_input_embeddings().weight.shape[0] == len(processor.tokenizer) > 151936
        delta = load_file(str(out / "adapter_model.safetensors"))
        saved = next(v for k, v in delta.items() if "trainable_tokens_delta" in k)
        indices = json.loads((out / "adapter_config.json").read_text())["trainable_token_indices"]
        assert set(new) <= set(indices)
        assert torch.equal(model.get_input_embeddings().weight[indices], saved)


def test_config_file_holds_both_configs_and_flags_win(tmp_path):
    path = tmp_path / "vtg.yaml"
    path.write_text("annotations: a.txt\nvideo-dir: videos\nnum_frames: 6\nlr: 0.001\nmax_steps: 3\n")
    cfg, vtg = load_vtg_config(path, {"max_steps": 5, "lr": None}, {"num_frames": None, "use_temporal_tokens": True})
    assert (cfg.optim.lr, cfg.optim.max_steps) == (0.001, 5)
    assert (vtg.annotations, vtg.video_dir, vtg.num_frames, vtg.use_temporal_tokens) == ("a.txt", "videos", 6, True)
    path.write_text("num_frame: 6\n")
    with pytest.raises(ValueError, match=r"vtg\.yaml line 1: unknown option 'num_frame'"):
        load_vtg_config(path, {}, {})
    with pytest.raises(ValueError, match="--frames-as must be video or images"):
        VTGConfig(frames_as="path")
    with pytest.raises(ValueError, match="--num-time-bins must be >= 2"):
        VTGConfig(num_time_bins=1)


def test_trl_and_axolotl_config_files_are_translated_with_the_vtg_keys_beside(tmp_path):
    path = tmp_path / "sft.yaml"
    path.write_text("model_name_or_path: m\nuse_peft: true\nlora_r: 4\nlearning_rate: 3e-4\nmax_steps: 7\n"
                    "annotations: a.txt\nvideo_dir: videos\nnum_frames: 4\n")
    shown = []
    cfg, vtg = load_vtg_config(path, {"max_steps": 9}, {"num_frames": None}, shown.append)
    assert (cfg.model.base_model, cfg.model.full_finetune, cfg.lora.lora_r, cfg.optim.lr, cfg.optim.max_steps) == ("m", False, 4, 3e-4, 9)
    assert (vtg.annotations, vtg.video_dir, vtg.num_frames) == ("a.txt", "videos", 4)
    assert shown[0].dialect == "TRL" and "learning_rate: 3e-4  ->  --lr 0.0003" in shown[0].lines
    axolotl = tmp_path / "lora.yml"
    axolotl.write_text("base_model: m\nadapter: lora\nmicro_batch_size: 2\nannotations: a.txt\n")
    cfg, vtg = load_vtg_config(axolotl, {}, {})
    assert (cfg.optim.batch_size, cfg.model.full_finetune, vtg.annotations) == (2, False, "a.txt")
    # A foreign file's dataset would be dropped unsaid: refused, naming the file, line and key
    path.write_text("model_name_or_path: m\nuse_peft: true\ndataset_name: org/data\n")
    with pytest.raises(ValueError, match=r"sft\.yaml line 3 \(dataset_name\): train-vtg reads its data from --annotations and --video-dir, not --dataset"):
        load_vtg_config(path, {}, {})


def test_train_vtg_refuses_missing_videos_and_text_models(corpus, tmp_path):
    (tmp_path / "ann.txt").write_text(QUERIES + "ZZZZZ 0.0 1.0##nobody.\n")
    vtg = VTGConfig(annotations=str(tmp_path / "ann.txt"), video_dir=str(corpus.videos))
    with pytest.raises(FileNotFoundError, match=r"--annotations: 1 of 5 rows have no video: .*ann\.txt:5: no video for ZZZZZ"):
        train_vtg(TrainConfig.from_options(output=str(tmp_path / "out")), vtg)
    vtg = VTGConfig(annotations=str(corpus.ann), video_dir=str(corpus.videos))
    with pytest.raises(ValueError, match="smollm2-135m is a text model; train-vtg needs a video-language model"):
        train_vtg(TrainConfig.from_options(base_model="smollm2-135m", output=str(tmp_path / "out")), vtg)
