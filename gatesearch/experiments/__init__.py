"""Experiments on a campaign's results: `retrain` (the best, at the full budget) and `fidelity`
(how far the proxy can be trusted on a task)."""
