"""Export layer: registered model + target profile -> ONNX / TVM / TensorRT artefacts with parity reports.

`export_model(model, target, out, ...)` builds an artefact folder (see `edgeml.export.artefact`);
`edgeml.export.targets.load_profile` reads the target profiles; `edgeml.export.runtime.open_runtime` runs any
backend of a folder.
"""

from __future__ import annotations

from edgeml.export.artefact import export_model

__all__ = ["export_model"]
