"""benchmarks/gpu_prepare.py's own transformations, checked here because the GPU machine only compares: its
periodic weights keep a packed weight's padding (a CPU conv kernel multiplies the padded taps and channels, so
they must stay the packer's zeros: with them sampled too, the --cpu check of ResNet-18 INT8 differed at every
output), and the archive --pack writes unpacks, in gpu_check.py, to the same folder."""
from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import requires_torch, requires_tvm


@requires_torch
@requires_tvm
def test_periodic_weights_keep_the_padding_of_packed_weights_and_the_build_stays_bit_exact(monkeypatch):
    import torch

    from benchmarks import gpu_prepare
    from compiler import interp
    from compiler.api import final_ir
    from compiler.backends.tvm import BACKEND
    from compiler.ops import layout as lay
    from compiler.target import Target

    class Net(torch.nn.Module):         # a 3-channel stem (channels padded to 4) and 3x3 taps (padded on AMX)
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Conv2d(3, 32, 3, padding=1)
            self.b = torch.nn.Conv2d(32, 32, 3, padding=1)

        def forward(self, x):
            return self.b(torch.relu(self.a(x)))

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((1, 3, 16, 16)).astype(np.float32) for _ in range(3)]
    target = Target("llvm", num_threads=1)
    g, _ = final_ir(Net().eval(), target, example_inputs=(torch.from_numpy(xs[0]),), quantize="int8",
                    integer_only=True, calibration=[[x] for x in xs[1:]])
    packed = [n.inputs[0] for n in gpu_prepare._nodes(g) if n.op is lay.unpack_weight and n.inputs[0].is_const]
    assert packed
    before = {id(v): v.const.copy() for v in packed}
    read = gpu_prepare._read_elements(g)
    assert any(not m.all() for m in read.values())          # some packed weight has padding
    monkeypatch.setattr(gpu_prepare, "MIN_CONST_BYTES", 1)
    assert gpu_prepare.periodic_weights(g) > 0
    for v in packed:
        pad = ~read[id(v)]
        np.testing.assert_array_equal(v.const[pad], before[id(v)][pad])
        assert not np.array_equal(v.const, before[id(v)])
    exe = BACKEND.build(g, target)
    for got, want in zip(exe.run(xs[:1]), interp.run(g, *xs[:1])):
        np.testing.assert_array_equal(got, want)


def test_the_packed_folder_unpacks_to_the_same_files(tmp_path):
    from benchmarks.gpu_check import unpack
    from benchmarks.gpu_prepare import pack
    folder = tmp_path / "gc"
    (folder / "sub").mkdir(parents=True)
    (folder / "manifest.json").write_text("{}")
    (folder / "sub" / "lib.bin").write_bytes(bytes(range(256)) * 64)
    archive = pack(folder)
    assert archive.name == "gc.tar.xz" and archive.stat().st_size < 16384
    out = unpack(archive)
    assert out.name == "gc" and out != folder
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == sorted(p.relative_to(folder) for p in folder.rglob("*"))
    assert (out / "sub" / "lib.bin").read_bytes() == (folder / "sub" / "lib.bin").read_bytes()


@requires_torch
def test_the_crnns_checked_part_is_sample_0_of_its_time_major_output():
    """gpu_prepare's ocr model (the CRNN) answers (steps, batch, classes): a batch built by batch_input() has the
    batch-1 input as sample 0, and sliced() keeps exactly that sample's output, which the reference holds."""
    import torch

    from benchmarks import gpu_prepare
    model = gpu_prepare.torch_model("ocr")
    x1 = gpu_prepare.inputs("ocr", 1, gpu_prepare.SEED + 1)[0]
    with torch.no_grad():
        one = model(torch.from_numpy(x1)).numpy()
        three = model(torch.from_numpy(gpu_prepare.batch_input(x1, 3))).numpy()
    assert one.shape == (64, 1, 11) and three.shape == (64, 3, 11)
    np.testing.assert_allclose(gpu_prepare.sliced(three, "ocr"), gpu_prepare.sliced(one, "ocr"), rtol=1e-5, atol=1e-5)
    assert not np.allclose(three[:, 1], one[:, 0], atol=1e-3)


@pytest.mark.slow
@requires_torch
@requires_tvm
def test_the_attention_options_reach_the_compiled_encoder(monkeypatch, tmp_path):
    """--integer-attention makes the int8 encoder's attentions q.attention, --shiftadd-attention the float one's
    mfree.binary_attention (a small encoder stands in for BERT-small); each build matches its reference (int8
    bit for bit, fp32 within float round-off)."""
    from benchmarks import gpu_prepare
    from compiler import interp
    from compiler.target import Target
    from examples.zoo import BertEncoder

    def small(name, seed=gpu_prepare.SEED):
        import torch
        torch.manual_seed(seed)
        return BertEncoder(vocab=gpu_prepare.VOCAB, hidden=32, heads=2, ffn=64, layers=2, seq=16).eval()
    monkeypatch.setattr(gpu_prepare, "torch_model", small)
    monkeypatch.setitem(gpu_prepare.MODELS, "encoder", ("small", "ids", (16,), "int64"))
    target = Target("llvm", num_threads=1)
    x = gpu_prepare.inputs("encoder", 1, 1)
    for mode, option, op in (("int8", "integer_attention", "q.attention"),
                             ("fp32", "shiftadd_attention", "mfree.binary_attention")):
        g, cm = gpu_prepare.compile_artifact("encoder", mode, 1, target, "tvm", tmp_path, **{option: True})
        assert g.op_histogram().get(op) == 2, (mode, g.op_histogram())
        got, want = cm.run(*x)[0], interp.run(g, *x)[0]
        np.testing.assert_allclose(got, want, rtol=0, atol=0 if mode == "int8" else 1e-4 * np.abs(want).max())
