"""Video temporal grounding: "when does <query> happen in this video?".

Modules, one concern each:

* ``prompt_templates``: phrasings of the question and deterministic per-sample choice;
* ``data``: Charades-STA and ActivityNet Captions readers (``Moment`` rows);
* ``temporal_tokens``: ``<0>`` ... ``<N-1>`` time-bin tokens and seconds <-> bins;
* ``video``: uniform frame sampling from mp4 files or frame folders, with timestamps;
* ``dataset``: ``VideoTemporalSFTDataset``, chat messages for supervised fine-tuning;
* ``collate``: ``SFTCollator``, examples built by the mask engine (loss on the answer only);
* ``config``: ``VTGConfig``, the data and prompt options of ``model-garden train-vtg``;
* ``train``: ``train_vtg``, the engine of ``model-garden train-vtg``;
* ``predict``: ``predict_vtg``, the engine of ``model-garden predict-vtg``;
* ``metrics``: ``parse_span`` and ``grounding_metrics`` (R1@0.3/0.5/0.7, mIoU);
* ``report``: a predictions file scored against its annotations (``model-garden evaluate-vtg``).

The whole path, formats and conventions: ``docs/vtg.md``.

Submodules are imported directly (``from model_garden.vtg.metrics import ...``) so that
reading annotations or scoring answers never imports torch or PyAV.

Try it: ``python -m model_garden.vtg.metrics "The event happens in 24.3 - 30.4 seconds."``;
tests: ``.venv/bin/python -m pytest tests/test_vtg_*.py -q``.
"""
