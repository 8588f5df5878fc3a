"""Optional dependencies: the error that names the extra to install.

ONNX export and decoding, and vLLM, are extras (``pip install 'model-garden[onnx]'``,
``[vllm]``). A command that needs a missing one stops with ``MissingExtra``: the CLI
prints its message as one line and exits 2, as for other bad input, because a missing
package is the user's to install, not a bug to report.
"""

from __future__ import annotations


class MissingExtra(ImportError):
    """An optional dependency a flag needs is not installed; the message says which flag
    and the ``pip install`` that brings it."""

    self_explaining = True  # the CLI prints this message as it is (it says what to do)
