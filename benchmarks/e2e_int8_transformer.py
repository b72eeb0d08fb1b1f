"""Integer-only INT8 transformer encoder (I-ViT Shiftmax / ShiftGELU / I-LayerNorm / ShiftTanh)
vs ONNX Runtime FP32 and ONNX Runtime quantize_dynamic INT8, same model, same run, 1 thread:
latency and cosine similarity of the pooled output against ORT FP32.

    PYTHONPATH=. .venv/bin/python benchmarks/e2e_int8_transformer.py [--layers 6 --hidden 384 --seq 128]

    PYTHONPATH=. .venv/bin/python benchmarks/e2e_int8_transformer.py --model hf-sdpa   # transformers' BertModel

    PYTHONPATH=. .venv/bin/python benchmarks/e2e_int8_transformer.py --integer-attention   # + the one-pass row

--integer-attention adds a row: the same integer-only build with integer_attention=True (each attention one
q.attention kernel, Shiftmax in the running recurrence; passes/qattention.py).

The model is examples.zoo.BertEncoder (random weights, vocab 1000), or with --model hf-sdpa / hf-eager
transformers' own BertModel built from a config (random weights; inputs input_ids and attention_mask, output
the pooled sentence embedding) with that attention implementation, exported to ONNX (opset 17, the
TorchScript exporter); calibration: 4 batches of random token ids; evaluation: 8 other random sequences."""
from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.common import CACHE, interleaved_medians, ort_session  # noqa: E402



def hf_bert(attn: str, vocab: int, hidden: int, heads: int, layers: int, seq: int):
    """transformers' BertModel from a config (random weights), returning its pooled sentence embedding."""
    import torch
    from transformers import BertConfig, BertModel

    class Pooled(torch.nn.Module):
        def __init__(self, bert):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask):
            return self.bert(input_ids=input_ids, attention_mask=attention_mask).pooler_output

    cfg = BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                     intermediate_size=4 * hidden, max_position_embeddings=seq, attn_implementation=attn)
    return Pooled(BertModel(cfg)).eval()


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    return float(np.min((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)))


OURS, ONE_PASS = "ours INT8 integer-only", "ours INT8 integer-only, one-pass attention"
ORT_FP32, ORT_INT8 = "ORT FP32", "ORT INT8 quantize_dynamic"


@dataclass
class Measured:
    """Median ms and the minimum cosine with ORT FP32's output per runtime (ORT_FP32, ORT_INT8, OURS and, with
    integer_attention, ONE_PASS, in that order), and our compile seconds."""
    ms: dict[str, float]
    cosine: dict[str, float]
    compile_s: float


def measure_model(model: str = "zoo", layers: int = 6, hidden: int = 384, heads: int = 6, seq: int = 128,
                  vocab: int = 1000, threads: int = 1, repeat: int = 30, warmup: int = 3,
                  integer_attention: bool = False, keep_16bit: Sequence[str] = ()) -> Measured:
    """Build `model` ("zoo", "hf-sdpa" or "hf-eager"), export it, quantize it with onnxruntime and with ours, and
    time them interleaved on the first evaluation sequence."""
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    import compiler
    from examples import zoo

    torch.manual_seed(0)
    CACHE.mkdir(parents=True, exist_ok=True)
    tag = f"bert_{model}_l{layers}_h{hidden}_s{seq}"
    fp32 = CACHE / f"{tag}.onnx"
    ids0 = torch.zeros(1, seq, dtype=torch.int64)
    if model == "zoo":
        net = zoo.BertEncoder(vocab, hidden, heads, 4 * hidden, layers, seq)
        zoo.export_onnx(net, ids0, fp32, input_name="ids")
        names = ["ids"]
    else:
        net = hf_bert(model.split("-")[1], vocab, hidden, heads, layers, seq)
        names = ["input_ids", "attention_mask"]
        torch.onnx.export(net, (ids0, torch.ones_like(ids0)), str(fp32), opset_version=17, dynamo=False,
                          input_names=names)
    int8 = CACHE / f"{tag}_dynamic_int8.onnx"
    quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8)

    rng = np.random.default_rng(0)

    def batch() -> list[np.ndarray]:
        ids = rng.integers(0, vocab, (1, seq)).astype(np.int64)
        return [ids, np.ones_like(ids)][:len(names)]

    calib = [batch() for _ in range(4)]
    evals = [batch() for _ in range(8)]
    target = f"llvm -num-threads={threads}"
    t0 = time.perf_counter()
    cm = compiler.compile(str(fp32), target=target, quantize="int8",
                          calibration=calib, integer_only=True, keep_16bit=keep_16bit)
    compile_s = time.perf_counter() - t0

    sessions = {ORT_FP32: ort_session(fp32, threads), ORT_INT8: ort_session(int8, threads)}
    outs = {k: np.concatenate([s.run(None, dict(zip(names, x)))[0] for x in evals]) for k, s in sessions.items()}
    ours = {OURS: cm}
    if integer_attention:
        ours[ONE_PASS] = compiler.compile(str(fp32), target=target, quantize="int8", calibration=calib,
                                          integer_only=True, integer_attention=True, keep_16bit=keep_16bit)
    fns = {k: (lambda s=s: s.run(None, dict(zip(names, evals[0])))) for k, s in sessions.items()}
    for k, c in ours.items():
        outs[k] = np.concatenate([c.run(*x)[0] for x in evals])
        fns[k] = lambda c=c: c.run(*evals[0])
    lat = interleaved_medians(fns, warmup, repeat)
    return Measured(lat, {k: cosine(outs[k], outs[ORT_FP32]) for k in lat}, compile_s)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=["zoo", "hf-sdpa", "hf-eager"], default="zoo")
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--hidden", type=int, default=384)
    ap.add_argument("--heads", type=int, default=6)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--vocab", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--integer-attention", action="store_true",
                    help="also time and check the build with the one-pass integer attention")
    args = ap.parse_args()

    m = measure_model(args.model, args.layers, args.hidden, args.heads, args.seq, args.vocab, threads=1,
                      repeat=args.repeat, warmup=args.warmup, integer_attention=args.integer_attention)
    what = "BertEncoder" if args.model == "zoo" else f"transformers BertModel ({args.model[3:]} attention, pooled output)"
    print(f"\n{what} layers={args.layers} hidden={args.hidden} seq={args.seq}, batch 1, 1 thread; "
          f"machine {os.uname().machine}, {os.cpu_count()} cores; our compile {m.compile_s:.1f} s")
    print("| runtime | median ms | vs ORT FP32 | min cosine vs ORT FP32 |")
    print("|---|---|---|---|")
    for k, ms in m.ms.items():
        print(f"| {k} | {ms:.2f} | {m.ms[ORT_FP32] / ms:.2f}x | {m.cosine[k]:.4f} |")


if __name__ == "__main__":
    main()
