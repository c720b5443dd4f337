"""Runs: what a campaign stores and how it is read back (the typed config first)."""
