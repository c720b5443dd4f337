"""Export an architecture as one standalone, readable PyTorch file, and its weights.

    source = export_source(graph, ctx, title="my-campaign", arch_hash=h, metrics={"loss": 1.2})
    write_export(graph, ctx, "model.py", model=trained, weights=True, title=..., ...)

The file imports only torch (safetensors inside its `load()`); its primitive classes are the
engine's own, copied (see `sources`); `export_weights` writes a model's tensors under the
exported class's names.
"""

from gatesearch.export.codegen import attribute_names, export_source
from gatesearch.export.docinfo import About, Scores, ScoreSource
from gatesearch.export.errors import ExportError
from gatesearch.export.weights import export_state_dict, export_weights
from gatesearch.export.write import ExportPaths, write_export

__all__ = [
    "About",
    "ExportError",
    "ExportPaths",
    "ScoreSource",
    "Scores",
    "attribute_names",
    "export_source",
    "export_state_dict",
    "export_weights",
    "write_export",
]
