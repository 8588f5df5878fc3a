"""The scan report's fingerprint (``masking.scan_report``): what enters it, and its versions.

Run: ``.venv/bin/python -m pytest tests/test_scan_report.py -q``
"""

from __future__ import annotations

import hashlib

import numpy as np

from model_garden.masking.scan_report import FINGERPRINT_VERSION, example_bytes, fingerprint_name, fingerprint_version


def _ex(ids, weights):
    return {"input_ids": ids, "labels": [-100, *ids[1:]], "loss_weights": weights, "token_classes": np.zeros(len(ids), dtype=np.uint8)}


def test_version_2_hashes_each_value_and_each_boundary():
    a, b = _ex([5, 6, 7], [0.0, 0.1, 1.0]), _ex([8], [1.0])
    whole = example_bytes(a) + example_bytes(b)
    # Each example starts with its length, then its arrays in fixed dtypes.
    assert example_bytes(b) == np.int64(1).tobytes() + np.int64(8).tobytes() + np.int64(-100).tobytes() + np.float64(1.0).tobytes() + np.int64(0).tobytes()
    moved = example_bytes(_ex([5, 6], [0.0, 0.1])) + example_bytes(_ex([7, 8], [1.0, 1.0]))
    assert whole != moved  # the same tokens cut elsewhere
    assert example_bytes(_ex([5, 6, 7], [0.0, 0.1, 0.9])) != example_bytes(a)  # one weight
    # Lists, numpy arrays of any integer dtype: the same bytes.
    assert example_bytes({k: np.asarray(v, dtype=np.int32) if k != "loss_weights" else v for k, v in a.items()}) == example_bytes(a)


def test_version_1_is_the_repr_of_floats_and_names_itself_by_having_no_prefix():
    a = _ex([5, 6], [0.0, 0.1])
    assert example_bytes(a, 1) == b"[5.0, 6.0][-100.0, 6.0][0.0, 0.1][0.0, 0.0]"
    digest = hashlib.sha256(b"x").hexdigest()
    assert fingerprint_name(digest, 1) == digest and fingerprint_version(digest) == 1
    assert fingerprint_name(digest) == f"v{FINGERPRINT_VERSION}-{digest}" and fingerprint_version(fingerprint_name(digest)) == FINGERPRINT_VERSION == 2
