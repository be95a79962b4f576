"""CURE concept erasure (spectral eraser + expansion) and the UCE baseline for text-conditioned diffusion UNets.

`erase(model, out, forget, ...)` edits a diffusers folder, a safetensors state dict or an ONNX UNet;
`build_edit` + `edit_module` do the same for a UNet in memory. See docs/architecture.md §6 for the math.
"""

from edgeml.cure.apply import cross_attention_layers, edit_module
from edgeml.cure.erase import build_edit, erase
from edgeml.cure.spectral import LowRankEdit, discriminative_projector, expansion, spectral_projector
from edgeml.cure.uce import uce_edit

__all__ = ["LowRankEdit", "build_edit", "cross_attention_layers", "discriminative_projector", "edit_module",
           "erase", "expansion", "spectral_projector", "uce_edit"]
