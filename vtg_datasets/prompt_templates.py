"""``from vtg_datasets.prompt_templates import TemplateSelector`` keeps working; see
``model_garden.vtg.prompt_templates``."""

from model_garden.vtg.prompt_templates import (
    STANDARD_TEMPLATES,
    TEMPORAL_TOKEN_TEMPLATES,
    TemplateError,
    TemplateSelector,
    load_templates,
)

__all__ = ["STANDARD_TEMPLATES", "TEMPORAL_TOKEN_TEMPLATES", "TemplateError", "TemplateSelector", "load_templates"]
