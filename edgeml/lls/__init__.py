"""LLS: local learning with a fixed periodic basis (basis, rule, trainer; pack/device for the C++ engine)."""

from edgeml.lls.basis import periodic_basis
from edgeml.lls.rule import LLSBlock, LocalRule, local_loss, local_loss_grad

__all__ = ["LLSBlock", "LocalRule", "local_loss", "local_loss_grad", "periodic_basis"]
