"""Compatibility names for code written against the ``vtg_datasets`` package of the
video temporal grounding notes; everything lives in ``model_garden.vtg``."""
