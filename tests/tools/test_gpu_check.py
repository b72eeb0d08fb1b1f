"""benchmarks/gpu_check.py's bookkeeping, which runs only on the GPU machine: an IREE artifact that raised on the
GPU is checked once more with synchronous allocations, and its status keeps both answers and stays a failure."""
from __future__ import annotations

from benchmarks import gpu_check


def test_an_iree_artifact_that_raised_on_the_gpu_is_retried_with_synchronous_allocations(monkeypatch):
    calls = []

    def check_one(folder, device, file, reports, env=None):
        calls.append((file, env))
        if file == "wrong_mlir.dyc":
            return "FAIL: output 0 relative error 3.0e-01 (bound 0.02)"
        if file.endswith("_mlir.dyc") and env is None:
            return "FAIL: ValueError: Error invoking function: INVALID_ARGUMENT"
        return "ok (bit-exact)"

    monkeypatch.setattr(gpu_check, "_check_one", check_one)
    arts = [{"file": f, "backend": b} for f, b in
            (("raised_mlir.dyc", "mlir"), ("wrong_mlir.dyc", "mlir"), ("raised_tvm.dyc", "tvm"))]
    status, _ = gpu_check.run_checks(None, arts, "gpu")
    assert calls == [("raised_mlir.dyc", None), ("raised_mlir.dyc", gpu_check.IREE_RETRY),
                     ("wrong_mlir.dyc", None), ("raised_tvm.dyc", None)]
    assert status["raised_mlir.dyc"].startswith("FAIL: ValueError")
    assert status["raised_mlir.dyc"].endswith("[--cuda_async_allocations=false: ok (bit-exact)]")
    assert status["wrong_mlir.dyc"] == "FAIL: output 0 relative error 3.0e-01 (bound 0.02)"
    calls.clear()
    gpu_check.run_checks(None, arts[:1], "cpu")            # the CPU check has no CUDA driver to retry with
    assert calls == [("raised_mlir.dyc", None)]
