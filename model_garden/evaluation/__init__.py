"""Score structured predictions: field accuracy, CER, ANLS, hallucination and omission
rates, JSON and schema validity, and Donut's F1 and tree-edit-distance accuracy.

    from model_garden.evaluation import extraction_metrics
    metrics = extraction_metrics([{"total": "9.00"}, None], [{"total": "9.00"}, {"total": "4.50"}])
"""

from model_garden.evaluation.metrics import extraction_metrics
from model_garden.evaluation.report import evaluate_files, report_tables

__all__ = ["evaluate_files", "extraction_metrics", "report_tables"]
