"""Inference: schema-constrained decoding (``constrained``) and batch prediction over a
dataset (``predict``)."""
