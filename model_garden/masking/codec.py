"""``ChatCodec``: the one boundary between samples and tokens.

A codec owns one tokenizer or processor, its chat template, the image policy and the
schema lookup, and offers two encodings of a ``Sample``:

* ``encode_train(sample, mask_config)``: input ids, labels, loss weights and token classes
  (the mask engine of ``build.py``);
* ``encode_prompt(sample)``: the ids (and image/video tensors) generation starts from:
  every message before the final reply, then the template's assistant header, tokenized
  by the same function as training, so it is the prefix of ``encode_train``'s ids up to
  the reply (``tests/test_codec.py`` checks it on every source format).

Training, ``validate-data``, ``inspect-masks``, ``predict``, ``compare`` and VTG all go
through a codec: nothing else opens an image or renders a template.

    codec = ChatCodec.for_data(tokenizer, "data/forms/text/train.jsonl")
    ex = codec.encode_train(sample, MaskConfig(strategy="moderate"))

Try it: ``python -m model_garden.masking.codec`` encodes the bundled example both ways.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from PIL import Image

from model_garden.data.images import ImagePolicy, load_image
from model_garden.data.sample import Sample
from model_garden.data.schema import dataset_schema, record_schema
from model_garden.data.sources import base_dir_of
from model_garden.masking.build import encode_conversation
from model_garden.masking.tokens import encode_ids, encode_multimodal
from model_garden.masking.conversation import Conversation, normalize
from model_garden.masking.render import render_prompt
from model_garden.masking.strategies import MaskConfig
from model_garden.models import is_processor, text_tokenizer


class ChatCodec:
    """Encode samples for training and for generation (see the module docstring).

    Args:
        processing: A fast tokenizer or a vision-language processor; ``None`` gives a
            codec that only checks records and opens images (``validate-data`` without
            a model).
        policy: Where images may come from (default: relative to the working directory,
            nothing outside it, nothing remote).
        schema: The reply schema of every sample (``--schema`` or the dataset's
            ``schema.json``); without it each sample's own is used.
    """

    def __init__(self, processing: Any, *, policy: ImagePolicy | None = None, schema: dict | None = None):
        self.processing = processing
        self.multimodal = processing is not None and is_processor(processing)
        self.tokenizer = text_tokenizer(processing) if processing is not None else None
        self.policy = policy or ImagePolicy(base_dir=Path.cwd())
        self.dataset_schema = schema

    @classmethod
    def for_data(
        cls,
        processing: Any,
        data: str | Path | None,
        *,
        allow_remote_images: bool = False,
        allow_outside_paths: bool = False,
        schema_file: str | Path | None = None,
    ) -> ChatCodec:
        """A codec for one dataset: its folder is the root of relative image paths (and
        the only place images may come from unless ``allow_outside_paths``), and its
        ``schema.json`` (or ``schema_file``) the reply schema."""
        policy = ImagePolicy(base_dir=base_dir_of(data), allow_outside_paths=allow_outside_paths, allow_remote=allow_remote_images)
        return cls(processing, policy=policy, schema=dataset_schema(data, schema_file))

    # -- what a sample refers to -----------------------------------------------------
    def conversation(self, sample: Sample, cfg: MaskConfig | None = None, *, require_reply: bool = True, media: bool = False) -> Conversation:
        """The sample normalised for this codec's template (media kept for processors, or
        with ``media`` to list a sample's images whatever the model)."""
        return normalize(
            sample.messages,
            cfg or MaskConfig(),
            multimodal=self.multimodal or media or self.processing is None,
            example=sample.where,
            tools=sample.tools,
            chat=sample.chat,
            require_reply=require_reply,
        )

    def open_images(self, refs: list[Any], where: str) -> list[Image.Image]:
        """Open image references under this codec's policy: the only place images open."""
        return [load_image(ref, where=f"{where}, image {k}", policy=self.policy) for k, ref in enumerate(refs)]

    def images(self, sample: Sample) -> list[Image.Image]:
        """Every image of a sample, in the order its template meets them."""
        return self.open_images(self.conversation(sample, require_reply=False, media=True).images, sample.where)

    def schema(self, sample: Sample) -> dict | None:
        """The reply schema of a sample: the dataset's, else the one the sample carries."""
        return self.dataset_schema if self.dataset_schema is not None else record_schema(sample)

    # -- encodings -------------------------------------------------------------------
    def encode_train(
        self,
        sample: Sample,
        cfg: MaskConfig | None = None,
        *,
        max_length: int | None = None,
        images: list[Image.Image] | None = None,
    ) -> dict[str, Any]:
        """Tokenize a sample and compute its labels and loss weights.

        Args:
            sample: The example.
            cfg: The masking policy; response-only (``strategy="none"``) by default.
            max_length: Truncate to this many tokens (the end is cut).
            images: Images already opened (by ``images``), in order; default: opened here.

        Returns:
            ``input_ids``, ``attention_mask``, ``labels`` (token id where trained, -100
            elsewhere) and ``loss_weights`` as lists of equal length; ``token_classes`` (a
            ``uint8`` array of class codes, see ``strategies.TOKEN_CLASS_NAMES``);
            ``json_found`` (False when a JSON strategy fell back to the whole reply);
            ``truncated``; and, for a processor, its image/video tensors.
        """
        cfg = cfg or MaskConfig()
        conv = self.conversation(sample, cfg)
        if self.multimodal and images is None:
            images = self.open_images(conv.images, sample.where)
        schema = cfg.schema
        if cfg.strategy == "schema-forced" and schema is None:
            schema = self.schema(sample)
        return encode_conversation(
            self.processing,
            conv,
            cfg,
            images=images or [],
            max_length=max_length,
            name=sample.where,
            processor_kwargs=sample.processor_kwargs,
            schema=schema,
        )

    def prompt_text(self, sample: Sample) -> tuple[str, Conversation]:
        """The rendered generation prompt and its conversation (for its media)."""
        return render_prompt(
            self.processing, sample.messages, multimodal=self.multimodal, example=sample.where, tools=sample.tools, chat=sample.chat
        )

    def encode_prompt(self, sample: Sample) -> dict[str, Any]:
        """The ids generation starts from (``input_ids``, a list) and, for a processor,
        the image/video tensors of the prompt."""
        text, conv = self.prompt_text(sample)
        if not self.multimodal:
            return {"input_ids": encode_ids(self.tokenizer, text)}
        images = self.open_images(conv.images, sample.where)
        ids, _, _, _, extras = encode_multimodal(self.processing, text, images, conv.videos, sample.processor_kwargs)
        return {"input_ids": ids, **extras}


def build_example(
    processing: Any,
    messages: list[dict[str, Any]],
    cfg: MaskConfig | None = None,
    images: list | None = None,
    max_length: int | None = None,
    *,
    example: str | int = "example",
    processor_kwargs: dict[str, Any] | None = None,
    schema: dict | None = None,
    tools: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Tokenize a chat and compute its labels and loss weights: ``ChatCodec.encode_train``
    in one call.

    Args:
        processing: A fast tokenizer, a vision-language processor, or a ``ChatCodec``
            (whose image policy and schema then apply).
        messages: OpenAI chat messages (``content`` a string or a list of parts).
        cfg: The masking policy; response-only (``strategy="none"``) by default.
        images: Images already opened, in the order of the image parts; by default the
            parts' own references are opened (relative to the working directory, never
            outside it, never remote).
        max_length: Truncate to this many tokens (the end is cut).
        example: How errors name this example (an index or an id).
        processor_kwargs: Extra arguments for a processor call (e.g. a video's ``fps``).
        schema: The reply schema for ``schema-forced`` (default ``cfg.schema``, then the
            one the prompt carries).
        tools: Function definitions for the chat template.

    Returns:
        See ``ChatCodec.encode_train``.
    """
    codec = processing if isinstance(processing, ChatCodec) else ChatCodec(processing)
    cfg = cfg or MaskConfig()
    if schema is not None:
        cfg = dataclasses.replace(cfg, schema=schema)
    name = example if isinstance(example, str) else f"example {example}"
    sample = Sample(messages, tools=tools, where=name, processor_kwargs=processor_kwargs)
    return codec.encode_train(sample, cfg, max_length=max_length, images=images)


if __name__ == "__main__":
    from model_garden.data.jsonl import JsonlDataset
    from model_garden.models import load_processing

    bundled = Path(__file__).resolve().parent.parent / "assets" / "example.jsonl"
    codec = ChatCodec.for_data(load_processing("smollm2-135m"), bundled)
    sample = JsonlDataset(bundled).sample(0)
    train, prompt = codec.encode_train(sample, MaskConfig(strategy="moderate")), codec.encode_prompt(sample)
    n = len(prompt["input_ids"])
    print(f"prompt: {n} tokens, the prefix of training's {len(train['input_ids'])}: {train['input_ids'][:n] == prompt['input_ids']}")
    print("trained:", repr(codec.tokenizer.decode([i for i, lab in zip(train["input_ids"], train["labels"]) if lab != -100])))
