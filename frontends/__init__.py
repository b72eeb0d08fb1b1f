"""Model frontends: each turns a framework model (ONNX, PyTorch) into a `compiler.ir.Graph`.

Nothing outside this package imports onnx or torch; `compiler` imports the frontends lazily.
"""
