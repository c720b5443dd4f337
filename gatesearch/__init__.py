"""gatesearch: architecture search over gated neural networks."""

__version__ = "0.1.0"
