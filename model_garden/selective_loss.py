"""The names the design notes use, in one place:

    from model_garden.selective_loss import (
        LabelMasker, SelectiveLossSFTTrainer, SelectiveLossVisionDataCollator, StructuredOutputDataCollator,
    )

The implementations live in the pipeline packages: ``masking`` decides which tokens carry
loss, ``training.collate`` batches, ``training.trainer`` computes the weighted loss.
"""

from model_garden.masking import MaskConfig, build_example
from model_garden.training.collate import SelectiveLossVisionDataCollator, StructuredOutputDataCollator
from model_garden.training.label_masker import LabelMasker
from model_garden.training.trainer import SelectiveLossSFTTrainer

__all__ = [
    "LabelMasker",
    "MaskConfig",
    "SelectiveLossSFTTrainer",
    "SelectiveLossVisionDataCollator",
    "StructuredOutputDataCollator",
    "build_example",
]
