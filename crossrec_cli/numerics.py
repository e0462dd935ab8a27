"""Process-wide numerics that exact resume and same-seed reruns depend on.

PyTorch's CPU wheels (torch 2.13.0 bundles oneMKL 2024.2) send contiguous float unary ops
(``sqrt``, ``exp``, ``log``, ``tanh``, ...) to MKL's vector math library, which picks each
function's kernel on its first call. When that first call runs on several intra-op threads at
once, one thread can run a low-accuracy kernel for its chunk of that one call (pytorch/pytorch
#188792; fixed by oneMKL 2025). The result moves by up to thousands of ulps, once, at a moment
that depends on thread timing: two runs of the same seed, or a run and its resume, then differ in
the last bits of the loss and the weights (a resumed smoke run's epoch loss 7.193831 against
its reference's 7.193828 on one test machine; never reproduced on a 2-core AMD EPYC).

``warm_vector_math`` calls each of those ops once, on one thread, before any training: every
dispatch is then resolved before concurrent use, as the upstream fix does."""

from __future__ import annotations

import functools

import torch

# ATen's unary kernels that may route to MKL VML (aten/src/ATen/cpu/vml.h and UnaryOpsKernel.cpp)
VML_OPS = ("abs", "acos", "asin", "atan", "ceil", "cos", "cosh", "erf", "erfc", "erfinv", "exp", "expm1",
           "floor", "lgamma", "log", "log10", "log1p", "log2", "reciprocal", "round", "rsqrt", "sigmoid",
           "sin", "sinh", "sqrt", "tan", "tanh", "trunc")


@functools.cache
def warm_vector_math() -> tuple[str, ...]:
    """Call every op of ``VML_OPS`` once per float dtype on a small contiguous tensor (under
    ATen's 2048-element grain: it runs on the calling thread only). Once per process; returns
    the ops called."""
    for dtype in (torch.float32, torch.float64):
        x = torch.full((256,), 0.5, dtype=dtype)
        for name in VML_OPS:
            getattr(torch, name)(x)
    return VML_OPS
