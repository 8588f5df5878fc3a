"""Load the model a run trains: the tokenizer or processor, the base model at its dtype
(or QLoRA's 4-bit base on a CUDA GPU), and the LoRA adapter (with trainable rows for
added tokens), as ``training.run.train`` needs them.

Try it: ``python -m model_garden.training.model_setup`` prints the adapter of the
embedded SmolLM2.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import torch
from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
from transformers import BitsAndBytesConfig, set_seed

from model_garden.masking.templates import with_chat_template
from model_garden.models import is_processor, is_vision_model, load_model, load_processing, peft_quietly, resolve_model
from model_garden.options import ConfigError
from model_garden.training.config import TrainConfig

DEFAULT_LORA_TARGET = r"^(?!.*(?:visual|vision)).*\.(?:q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)$"


def use_bf16(setting: str) -> bool:
    if setting != "auto":
        return setting == "true"
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    # On CPUs without native bf16 (AVX512-BF16 / AMX), autocast is slower than fp32.
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def base_dtype(setting: str) -> Any:
    """The dtype the base model is loaded in: ``auto`` keeps the checkpoint's own on an
    accelerator (a frozen bf16 base, as TRL and Axolotl load it) and float32 on a CPU,
    where the master weights stay float32 and bf16 autocast does the speed."""
    if setting == "auto":
        return "auto" if torch.cuda.is_available() else torch.float32
    return getattr(torch, setting)


def quantization(cfg: TrainConfig) -> Any:
    """QLoRA's 4-bit NF4 base (``--load-in-4bit``): only on a CUDA device with
    bitsandbytes, refused with what is missing elsewhere."""
    if not cfg.model.load_in_4bit:
        return None
    if cfg.model.full_finetune:
        raise ConfigError("--load-in-4bit trains a LoRA adapter on a frozen 4-bit base; drop --full-finetune")
    if not torch.cuda.is_available():
        raise ConfigError("--load-in-4bit needs a CUDA GPU (bitsandbytes' 4-bit kernels); this machine has none: train in bf16/fp32 instead")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError("--load-in-4bit needs bitsandbytes: pip install bitsandbytes")
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16, bnb_4bit_use_double_quant=True)


def setup_processing(cfg: TrainConfig, processing: Any = None) -> tuple[Any, bool]:
    """The tokenizer or processor (loaded unless given; with ``--chat-template``'s template)
    and whether the model is a VLM."""
    if processing is None:
        vision = cfg.model.vision or is_vision_model(resolve_model(cfg.model.base_model))
        processing = load_processing(cfg.model.base_model, vision=vision)
    # A copy: saved beside the run with the template, so predict and export render alike.
    processing = with_chat_template(processing, cfg.model.chat_template)
    vision = is_processor(processing)
    if cfg.model.vision and not vision:
        raise ValueError(f"--base-model {cfg.model.base_model} is a text model; use `model-garden train`")
    if not cfg.model.vision and vision:
        raise ValueError(f"--base-model {cfg.model.base_model} is a vision-language model; use `model-garden train-vision`")
    return processing, vision


def setup_model(cfg: TrainConfig, vision: bool, model: Any = None, trainable_token_ids: list[int] | None = None) -> Any:
    """Load the base model (unless given) and wrap it in a LoRA adapter unless full fine-tuning.

    ``trainable_token_ids`` (tokens added to the vocabulary, e.g. temporal tokens) get
    trainable embedding rows in the adapter (PEFT trainable tokens; an untied output
    layer gets the same rows), saved with it as full values.
    """
    if model is None:
        model = load_model(cfg.model.base_model, vision=vision, dtype=base_dtype(cfg.model.dtype), quantization=quantization(cfg))
    set_seed(cfg.optim.seed)  # the adapter's initial weights depend only on the seed
    if cfg.model.gradient_checkpointing:
        model.config.use_cache = False
    if cfg.model.full_finetune:
        return model
    indices: list[int] | dict[str, list[int]] | None = None
    if trainable_token_ids:
        indices = sorted(set(trainable_token_ids))
        inputs, outputs = model.get_input_embeddings(), model.get_output_embeddings()
        if outputs is not None and outputs.weight is not inputs.weight:
            names = {id(m): n for n, m in model.named_modules()}
            indices = {names[id(inputs)]: indices, names[id(outputs)]: indices}
    lora = cfg.lora
    adapter = LoraConfig(
        r=lora.lora_r,
        lora_alpha=lora.lora_alpha,
        lora_dropout=lora.lora_dropout,
        target_modules=lora.lora_target or DEFAULT_LORA_TARGET,
        trainable_token_indices=indices,
        task_type="CAUSAL_LM",
    )
    if cfg.model.load_in_4bit:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.model.gradient_checkpointing)
    with peft_quietly():
        model = get_peft_model(model, adapter)
    if cfg.model.gradient_checkpointing:
        model.enable_input_require_grads()
    return model


if __name__ == "__main__":
    setup_model(TrainConfig(), vision=False).print_trainable_parameters()
