"""PyTorch frontend: `load_torch(module, example_inputs) -> Graph` via torch.export."""
from frontends.torch.importer import CONVERTERS, import_exported, load_torch

__all__ = ["CONVERTERS", "import_exported", "load_torch"]
