"""An integer-only, shift/add-aware deep-learning compiler.

    import compiler
    cm = compiler.compile("model.onnx", target="llvm")
    y = cm.run(x); cm.save("model.dyc"); cm2 = compiler.load("model.dyc")

Importing this package loads neither TVM, nor ONNX, nor PyTorch.
"""
from compiler.api import compile, import_model, optimize
from compiler.diagnostics import (ArtifactError, BackendToolError, CompileError, InvalidInput,
                                  InvalidModel, NumericsMismatch, Unsupported)
from compiler.runtime import CompiledModel, load
from compiler.target import Target
from compiler.version import __version__

__all__ = ["compile", "import_model", "optimize", "load", "CompiledModel", "Target", "CompileError",
           "InvalidModel", "InvalidInput", "Unsupported", "BackendToolError", "NumericsMismatch",
           "ArtifactError", "__version__"]
