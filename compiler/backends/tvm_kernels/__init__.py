"""Hand-scheduled TVM (0.27, s_tir) FP32 CPU kernels for the Relax backend.

Modules:
  conv2d  -- Conv2dSpec, choose_blocks, conv2d_te, pack_weight, pack_bias, make_conv2d (NCHW{b}c, fused epilogue)
  matmul  -- MatmulSpec, matmul_te, pack_b, make_matmul (batched, const/activation B, bias + relu/gelu)
  pool    -- PoolSpec, pool2d_te, make_pool2d (max / avg / global in the blocked layout)
  layout  -- pack_nchwc_te / unpack_nchwc_te / repack_nchwc_te and make_* PrimFuncs
  common  -- host_target(num_cores), finalize (op_pattern=8, tirx.is_scheduled), activations

Every make_* returns a scheduled tvm.tirx.PrimFunc with params (inputs..., output), attrs op_pattern=8 (opaque, so
Relax FuseOps leaves it alone), "tirx.is_scheduled"=True and "tvm_kernels.schedule" ("tiled"/"simple"/"none").
Embed it with ``gv = bb.add_func(f.with_attr("global_symbol", name), name)`` and
``relax.call_tir(gv, args, relax.TensorType(out_shape, "float32"))``.
"""
from . import common, conv2d, layout, matmul, pool  # noqa: F401
from .common import host_target  # noqa: F401
