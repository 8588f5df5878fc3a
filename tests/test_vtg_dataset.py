"""``VideoTemporalSFTDataset`` on tiny generated videos, and its messages through the mask
engine with a tiny random Qwen2-VL.

Run: ``.venv/bin/python -m pytest tests/test_vtg_dataset.py -q``
"""

from __future__ import annotations

import pytest
from PIL import Image

from model_garden.vtg.dataset import VideoTemporalSFTDataset
from model_garden.vtg.prompt_templates import STANDARD_TEMPLATES, TEMPORAL_TOKEN_TEMPLATES
from model_garden.vtg.video import write_synthetic_video


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Two 3 s videos and four Charades-STA style queries (one ends past the video)."""
    root = tmp_path_factory.mktemp("vtg")
    videos = root / "videos"
    videos.mkdir()
    for vid in ("AAAAA", "BBBBB"):
        write_synthetic_video(videos / f"{vid}.mp4", seconds=3.0, fps=8, size=64)
    ann = root / "ann.txt"
    ann.write_text(
        "AAAAA 1.2 2.4##a person opens a door.\n"
        "AAAAA 0.0 0.9##person turns on the light.\n"
        "BBBBB 1.5 3.6##someone sits down.\n"
        "BBBBB 0.3 1.8##a person drinks.\n",
        encoding="utf-8",
    )
    durations = root / "durations.csv"
    durations.write_text("id,length\nAAAAA,3.0\nBBBBB,3.0\n", encoding="utf-8")
    return ann, videos, durations


def test_item_messages_frames_and_answer(corpus):
    ann, videos, durations = corpus
    data = VideoTemporalSFTDataset(ann, videos, durations_file=durations, num_frames=6, template_seed=0)
    assert len(data) == 4 and data.report.clipped == 1
    item = data[0]
    user, assistant = item["messages"]
    assert user["role"] == "user" and assistant == {"role": "assistant", "content": "[1.2, 2.4]"}
    video, text = user["content"]
    assert video["type"] == "video" and len(video["video"]) == 6 and isinstance(video["video"][0], Image.Image)
    assert item["timestamps"] == pytest.approx([0.25, 0.75, 1.25, 1.75, 2.25, 2.75])
    assert text["text"].startswith(
        "The video lasts for 3.00 seconds, and 6 frames are uniformly sampled from it. "
        "These frames are located at 0.25s, 0.75s, 1.25s, 1.75s, 2.25s, 2.75s.\n"
    )
    assert text["text"].endswith(data.selector.format("a person opens a door.", 0))
    assert data[2]["messages"][1]["content"] == "[1.5, 3.0]"  # clipped to the 3 s video
    assert (item["video_id"], item["start"], item["end"], item["duration"]) == ("AAAAA", 1.2, 2.4, 3.0)
    assert item["where"].endswith("ann.txt:1")


def test_temporal_token_answers(corpus):
    ann, videos, durations = corpus
    data = VideoTemporalSFTDataset(ann, videos, use_temporal_tokens=True, num_time_bins=100, durations_file=durations, num_frames=2)
    # 100 bins of 0.03 s: 1.2 s -> bin 40, 2.4 s -> bin 80.
    assert data[0]["messages"][1]["content"] == "<|box_start|><40><80><|box_end|>"
    assert data.selector.templates == TEMPORAL_TOKEN_TEMPLATES
    # Without durations the video file's own length is used.
    assert VideoTemporalSFTDataset(ann, videos, use_temporal_tokens=True, num_frames=2)[1]["messages"][1]["content"] == (
        "<|box_start|><0><30><|box_end|>"
    )


def _prompt(item):
    return item["messages"][0]["content"][-1]["text"].split("\n", 1)[1]


def test_template_choice(corpus):
    ann, videos, durations = corpus
    seeded = [VideoTemporalSFTDataset(ann, videos, template_seed=7, num_frames=1) for _ in range(2)]
    assert [_prompt(seeded[0][i]) for i in range(4)] == [_prompt(seeded[1][i]) for i in reversed(range(4))][::-1]
    first = VideoTemporalSFTDataset(ann, videos, use_random_templates=False, num_frames=1)
    assert {_prompt(first[i]).replace(first.moments[i].query, "{query}") for i in range(4)} == {STANDARD_TEMPLATES[0]}
    fixed = VideoTemporalSFTDataset(ann, videos, prompt_template="When: {query}", template_seed=7, num_frames=1)
    assert [_prompt(fixed[i]) for i in range(2)] == ["When: a person opens a door.", "When: person turns on the light."]
    with pytest.raises(ValueError, match=r"prompt_template: .*\{query\}"):
        VideoTemporalSFTDataset(ann, videos, prompt_template="When does it happen?")


def test_frames_as_images_and_as_path(corpus):
    ann, videos, durations = corpus
    images = VideoTemporalSFTDataset(ann, videos, durations_file=durations, num_frames=3, frames_as="images")[0]
    parts = images["messages"][0]["content"]
    assert [p["type"] for p in parts] == ["text", "image"] * 3 + ["text"]
    assert [p["text"] for p in parts[:-1:2]] == ["0.50s:", "1.50s:", "2.50s:"]
    path = VideoTemporalSFTDataset(ann, videos, num_frames=3, frames_as="path")[0]
    video, text = path["messages"][0]["content"]
    assert video == {"type": "video", "video": str(videos / "AAAAA.mp4")} and path["timestamps"] is None
    assert text["text"].startswith("The video lasts for 3.00 seconds.\n")


def test_videos_are_read_lazily_and_missing_ones_name_the_row(corpus, tmp_path):
    ann, _, durations = corpus
    data = VideoTemporalSFTDataset(ann, tmp_path, durations_file=durations)  # no videos there: fine until read
    with pytest.raises(FileNotFoundError, match=r"ann.txt:3: no video for BBBBB in"):
        data[2]


def test_duration_mismatch_warns(corpus, tmp_path):
    ann, videos, _ = corpus
    durations = tmp_path / "d.csv"
    durations.write_text("id,length\nAAAAA,30.0\nBBBBB,3.0\n", encoding="utf-8")
    data = VideoTemporalSFTDataset(ann, videos, durations_file=durations, num_frames=2)
    with pytest.warns(UserWarning, match="lasts 3.00 s but the annotations say 30.00 s"):
        data[0]


def test_bad_options_name_the_option(corpus):
    ann, videos, _ = corpus
    with pytest.raises(ValueError, match="frames_as must be one of video, images, path"):
        VideoTemporalSFTDataset(ann, videos, frames_as="gif")
    with pytest.raises(ValueError, match="num_frames must be at least 1"):
        VideoTemporalSFTDataset(ann, videos, num_frames=0)


def test_notes_import_path_still_works():
    from vtg_datasets.video_dataset import VideoTemporalSFTDataset as Compat

    assert Compat is VideoTemporalSFTDataset


@pytest.fixture(scope="module")
def qwen2_vl():
    from model_garden.testing.models import tiny_qwen2_vl
    from model_garden.vtg.temporal_tokens import add_temporal_tokens

    model, processor = tiny_qwen2_vl("2")
    add_temporal_tokens(processor, model, num_bins=100)
    return model, processor


@pytest.mark.parametrize(("frames_as", "tokens"), [("video", False), ("video", True), ("images", False)])
def test_mask_engine_trains_only_the_answer(corpus, qwen2_vl, frames_as, tokens):
    import torch

    from model_garden.masking import MaskConfig, build_example

    ann, videos, durations = corpus
    model, processor = qwen2_vl
    data = VideoTemporalSFTDataset(ann, videos, durations_file=durations, use_temporal_tokens=tokens, num_frames=4, frames_as=frames_as)
    ex = build_example(processor, data[0]["messages"], MaskConfig())
    trained = [i for i, label in zip(ex["input_ids"], ex["labels"]) if label != -100]
    if tokens:
        assert processor.tokenizer.convert_ids_to_tokens(trained) == ["<|box_start|>", "<40>", "<80>", "<|box_end|>", "<|im_end|>"]
    else:
        assert processor.tokenizer.decode(trained) == "[1.2, 2.4]<|im_end|>"
    pad = processor.video_token_id if frames_as == "video" else processor.image_token_id
    # 4 frames of 64x64 -> 56x56: 16 patches per frame, merged 2x2 -> 4 tokens per frame,
    # and a video's temporal patch holds 2 frames.
    assert ex["input_ids"].count(pad) == (8 if frames_as == "video" else 16)
    grid = ex["video_grid_thw" if frames_as == "video" else "image_grid_thw"]
    assert grid.tolist() == ([[2, 4, 4]] if frames_as == "video" else [[1, 4, 4]] * 4)

    # The tensors fit the tokens: a forward and backward pass of the tiny model works,
    # and the loss reaches the vision tower through the frames.
    model.zero_grad(set_to_none=True)
    ids = torch.tensor([ex["input_ids"]])
    media = {k: ex[k] for k in ("pixel_values", "image_grid_thw", "pixel_values_videos", "video_grid_thw") if k in ex}
    mm_types = torch.tensor([ex["mm_token_type_ids"]])
    assert torch.equal(mm_types, (ids == processor.image_token_id).long() + 2 * (ids == processor.video_token_id).long())
    out = model(input_ids=ids, labels=torch.tensor([ex["labels"]]), mm_token_type_ids=mm_types, **media)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert model.model.visual.patch_embed.proj.weight.grad.abs().sum() > 0
