"""A two-member suite file the suite tests share: recall and copying, tiny, the second weighed
COPY_WEIGHT times the first."""

from __future__ import annotations

COPY_WEIGHT = 2

TWO_MEMBERS = f"""\
name = "two"

[[member]]
task = "in_context_recall"
params = {{ vocab = 8, length = 16, n_valid = 16, n_test = 16 }}

[[member]]
name = "copy"
task = "selective_copy"
params = {{ vocab = 4, length = 16, n_tokens = 2, n_valid = 16, n_test = 16 }}
weight = {COPY_WEIGHT}
"""
