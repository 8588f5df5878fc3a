"""Score structured predictions: field accuracy (all fields, and gold-filled ones), CER,
ANLS, hallucination and omission rates, JSON and schema validity, and Donut's F1 and
tree-edit-distance accuracy. An invalid output (``None``) scores zero on every field.

    from model_garden.evaluation import extraction_metrics
    metrics = extraction_metrics([{"total": "9.00"}, None], [{"total": "9.00"}, {"total": "4.50"}])

``score_records`` gives the per-record outcomes behind the metrics (``aggregate`` turns
them into the metrics); ``compare`` pairs them across strategies.
"""

from model_garden.evaluation.metrics import aggregate, extraction_metrics, score_records
from model_garden.evaluation.report import evaluate_files, report_tables

__all__ = ["aggregate", "evaluate_files", "extraction_metrics", "report_tables", "score_records"]
