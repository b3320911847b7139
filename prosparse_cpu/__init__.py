"""prosparse-cpu: activation-sparse LLM inference on plain CPUs."""

from ._lib import ProSparseError
from .model import Model, ModelInfo

__all__ = ["Model", "ModelInfo", "ProSparseError"]
