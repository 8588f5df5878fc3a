"""Video temporal grounding commands.

* ``train-vtg``: fine-tune a video LLM on Charades-STA / ActivityNet Captions annotations
  with response-only loss; every option of ``train`` plus the ``VTGConfig`` ones;
* ``predict-vtg``: answer every annotation row with a model, as JSONL;
* ``evaluate-vtg``: score the answers (R1@0.3/0.5/0.7, mIoU).

Run: ``model-garden train-vtg --help`` (see docs/vtg.md).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from model_garden.cli.common import console, err_console, interrupted_exit, user_errors
from model_garden.cli.train import CONFIG_OPTION, config_options, print_translation
from model_garden.training.config import TrainConfig
from model_garden.vtg.config import NOT_FOR_VTG, VTGConfig


def train_vtg(**kwargs: Any) -> None:
    """Fine-tune a video-language model (Qwen2-VL, Qwen2.5-VL) for temporal grounding on
    Charades-STA or ActivityNet Captions annotations. Loss on the answer and its
    end-of-turn token only; prompt, video tokens and padding masked. With
    `--use-temporal-tokens` the `<0>` ... `<N-1>` tokens are added and their embedding rows
    trained and saved with the adapter."""
    with user_errors():
        from model_garden.vtg.config import load_vtg_config
        from model_garden.vtg.train import train_vtg as run

        vtg_names = {f.name for f in dataclasses.fields(VTGConfig)}
        config = kwargs.pop("config")
        train_flags = {k: v for k, v in kwargs.items() if k not in vtg_names}
        vtg_flags = {k: v for k, v in kwargs.items() if k in vtg_names}
        cfg, vtg = load_vtg_config(config, train_flags, vtg_flags, print_translation)
        result = run(cfg, vtg, console=console)
    if result.interrupted:
        raise interrupted_exit(result.metrics.get("signal"))


train_vtg.__signature__ = inspect.Signature([CONFIG_OPTION, *config_options({**TrainConfig.groups(), "vtg": VTGConfig}, set(NOT_FOR_VTG))])


def predict_vtg(
    model: Annotated[str, typer.Option(help="train-vtg output folder, HF model folder, or a --base-model value")],
    annotations: Annotated[Path, typer.Option(help="Charades-STA .txt or ActivityNet Captions .json to answer")],
    video_dir: Annotated[Path, typer.Option(help="Folder of VIDEO_ID.mp4 files or VIDEO_ID/ frame folders")],
    durations: Annotated[Optional[Path], typer.Option(help="Charades-STA durations CSV (id,length); needed for temporal tokens")] = None,
    out: Annotated[Path, typer.Option(help="Predictions JSONL to write")] = Path("preds.jsonl"),
    limit: Annotated[Optional[int], typer.Option(help="Only the first N rows", min=1)] = None,
    batch_size: Annotated[int, typer.Option(help="Prompts generated together", min=1)] = 4,
    max_new_tokens: Annotated[int, typer.Option(help="Generation budget per answer", min=1)] = 32,
    num_frames: Annotated[Optional[int], typer.Option(help="Frames per video (default: as trained, else 8)", min=1)] = None,
) -> None:
    """Greedy answers, one {"index": i, "output": text} line per annotation row, prompted
    as the model was trained (its vtg_config.yaml); score them with evaluate-vtg."""
    with user_errors():
        from model_garden.vtg.predict import predict_vtg as run

        stats = run(
            model, annotations, video_dir, out,
            durations=durations, limit=limit, batch_size=batch_size, max_new_tokens=max_new_tokens, num_frames=num_frames,
        )
        console.print(f"wrote {out}: {stats['examples']} predictions in {stats['seconds']:.1f} s")
        bins = f" --num-bins {stats['num_time_bins']}" if stats["use_temporal_tokens"] else ""
        durations_flag = f" --durations {durations}" if durations else ""
        console.print(f"score: model-garden evaluate-vtg --predictions {out} --annotations {annotations}{durations_flag}{bins}")


def evaluate_vtg(
    predictions: Annotated[Path, typer.Option(help='JSONL, one `{"index": i, "output": "<answer>"}` per annotation row')],
    annotations: Annotated[Path, typer.Option(help="Charades-STA .txt or ActivityNet Captions .json the predictions answer")],
    durations: Annotated[Optional[Path], typer.Option(help="Charades-STA durations CSV (id,length); clips spans, needed for temporal tokens")] = None,
    num_bins: Annotated[int, typer.Option(help="Temporal bins of `<k>` token answers (as trained)", min=1)] = 100,
    out: Annotated[Optional[Path], typer.Option(help="JSON report path; default: PREDICTIONS with .report.json")] = None,
) -> None:
    """Parse each answer into a span in seconds ([12.3, 20.0], 12.3 - 20.0 seconds,
    00:12 - 00:20, temporal tokens ...), print R1@0.3/0.5/0.7 and mIoU (percent; an
    unparsed or missing answer scores IoU 0), and write them with per-row IoUs as JSON."""
    with user_errors():
        from model_garden.vtg.report import evaluate_files, report_table

        report = evaluate_files(predictions, annotations, durations, num_bins)
        console.print(report_table(report))
        for key, what in (("missing_predictions", "no prediction"), ("unparsed", "no span found in the answer")):
            if report[key]:
                shown = ", ".join(map(str, report[key][:20])) + (" ..." if len(report[key]) > 20 else "")
                err_console.print(f"[yellow]warning:[/] {what}, scored IoU 0: {len(report[key])} rows (indices {shown})")
        dropped = report["annotation_report"]["dropped"]
        if dropped:
            err_console.print(f"[yellow]warning:[/] {len(dropped)} annotation rows with start >= end were left out, e.g. {dropped[0]}")
        out = out or predictions.with_suffix(".report.json")
        out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        console.print(f"wrote {out}")


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the app."""
    app.command("train-vtg")(train_vtg)
    app.command("predict-vtg")(predict_vtg)
    app.command("evaluate-vtg")(evaluate_vtg)
