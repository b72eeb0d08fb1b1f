"""The ONNX frontend: `load_onnx(model, input_shapes)` -> a verified `compiler.ir.Graph`."""
from frontends.onnx.importer import MAX_OPSET, MIN_OPSET, load_onnx, supported_ops

__all__ = ["MAX_OPSET", "MIN_OPSET", "load_onnx", "supported_ops"]
