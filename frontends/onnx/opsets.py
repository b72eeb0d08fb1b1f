"""Which versions of each ONNX op the converters implement.

An op's meaning is fixed by its since-version: the opset in which its current definition was
introduced (onnx.defs). The converters were written against opsets 9..21 (they read
`ctx.opset` where a version changed the op), so every since-version an op has within that range
is implemented. Above 21 most ops were re-versioned only to admit new element types
(bfloat16, float8, int4, ...): those versions are listed in TYPES_ONLY, and the element types
themselves are checked where tensors are typed. Below 9 (opsets 7 and 8), a since-version
is taken as the op's opset-9 meaning when its signature (attribute names and kinds, input and
output names) is the opset-9 one: the versions before 9 changed types or broadcasting rules
that the opset-9 converters already implement, or they changed the signature (BatchNormalization-7's
`spatial`, Upsample, ...), which this check catches. A model at opset 7..28 is accepted node
by node; a node whose since-version is none of these is refused, naming the op and the version.
"""
from __future__ import annotations

import onnx
from onnx import defs

MIN_OPSET = 7
MAX_OPSET = defs.onnx_opset_version()
BASE_OPSETS = range(9, 22)             # what the converters were written and tested against

# Since-versions above 21 whose changes are only new element types (or an attribute that only
# those types read: Cast-24's round_mode is for float8e8m0; Range-27's stash_type for
# float16/bfloat16 accumulation, which the folded Range does in float64 anyway).
TYPES_ONLY: dict[str, tuple[int, ...]] = {
    **dict.fromkeys(
        ("Acos", "Acosh", "Asin", "Asinh", "Atan", "Atanh", "AveragePool", "Conv", "ConvTranspose",
         "Cos", "Cosh", "Dropout", "Elu", "GlobalAveragePool", "GlobalMaxPool", "GRU",
         "HardSigmoid", "HardSwish", "InstanceNormalization", "LSTM", "MaxPool", "Mish", "RNN",
         "Round", "Selu", "Sin", "Sinh", "Softplus", "Softsign", "Tan", "ThresholdedRelu"), (22,)),
    **dict.fromkeys(
        ("Cast", "CastLike", "Constant", "ConstantOfShape", "Flatten", "Identity", "Pad",
         "Reshape", "Shape", "Size", "Squeeze", "Transpose", "Unsqueeze"), (23, 24, 25)),
    "Cast": (23, 24, 25, 28), "CastLike": (23, 24, 25),
    "Einsum": (28,), "Mod": (28,), "ReduceLogSum": (28,), "ReduceLogSumExp": (28,),
    "TopK": (24,), "Range": (27,), "BitShift": (28,), "OneHot": (28,), "Celu": (28,),
    "GridSample": (22,), "RoiAlign": (22,),
    **dict.fromkeys(("LpPool", "MaxUnpool", "DeformConv"), (22,)),
    # QuantizeLinear-23's precision and DequantizeLinear-23's output_dtype are read by the converters
    **dict.fromkeys(("QuantizeLinear", "DequantizeLinear"), (23, 24, 25, 28)), "QLinearMatMul": (21,),
    **dict.fromkeys(("NegativeLogLikelihoodLoss", "LpNormalization", "EyeLike", "Det"), (22,)),
    # SpaceToDepth-28 adds mode=CRD (read by the converter); DepthToSpace-28 only a function body
    "SpaceToDepth": (28,), "DepthToSpace": (28,),
}


# Ops first defined after opset 21, by the since-versions their converters implement (Attention-24 adds
# nonpad_kv_seqlen, Attention-25 the sliding window; converters_attention.py reads both).
NEW_OPS: dict[str, tuple[int, ...]] = {
    "Attention": (23, 24, 25), "RMSNormalization": (23,), "RotaryEmbedding": (23,),
    "CumProd": (26,),
    "BitCast": (26,),
    "TensorScatter": (24,), "Swish": (24,), "SwiGLU": (28,), "CausalConvWithState": (27,), "LinearAttention": (27,),
}


def since_version(op_type: str, opset: int) -> int | None:
    """The since-version of `op_type` at `opset`, or None when the op does not exist there."""
    try:
        return defs.get_schema(op_type, opset, "").since_version
    except defs.SchemaError:
        return None


def _signature(schema: defs.OpSchema) -> tuple:
    return (sorted((k, a.type, a.required) for k, a in schema.attributes.items()),
            [i.name for i in schema.inputs], [o.name for o in schema.outputs])


def implemented_versions(op_type: str) -> set[int]:
    base = {since_version(op_type, v) for v in BASE_OPSETS} - {None}
    at_9 = since_version(op_type, BASE_OPSETS[0])
    older = set()
    if at_9 is not None:
        ref = _signature(defs.get_schema(op_type, BASE_OPSETS[0], ""))
        for opset in range(MIN_OPSET, BASE_OPSETS[0]):
            v = since_version(op_type, opset)
            if v is not None and _signature(defs.get_schema(op_type, opset, "")) == ref:
                older.add(v)
    return base | older | set(TYPES_ONLY.get(op_type, ())) | set(NEW_OPS.get(op_type, ()))


def version_problem(node: onnx.NodeProto, opset: int) -> str | None:
    """Why this default-domain node cannot be converted at `opset`, or None when it can."""
    v = since_version(node.op_type, opset)
    if v is None:
        return f"not defined at opset {opset}"
    have = implemented_versions(node.op_type)
    if v in have:
        return None
    return (f"{node.op_type}-{v} (the definition in force at opset {opset}) is not implemented; "
            f"implemented: {', '.join(f'{node.op_type}-{h}' for h in sorted(have))}")
