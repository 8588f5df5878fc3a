"""model-garden: fine-tune language and vision-language models for structured output.

The pipeline, one package each: ``data`` -> ``masking`` -> ``training`` (collate, loss,
trainer) -> ``inference`` (constrained decoding) -> ``evaluation``; ``experiments`` runs
A/B comparisons and the demo; ``vtg`` adds video temporal grounding.
"""

__version__ = "0.1.0"
