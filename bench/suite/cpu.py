"""What this CPU can do: matrix-multiply peaks, a model's FLOPs, and the runtime in use.

The model stages compare their achieved throughput (useful FLOPs over wall time) with
the peak measured here on the same thread count: fp32 for torch and ONNX fp32, int8
for ONNX int8 (dynamic quantization runs the weight matmuls as uint8 x int8).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

#: all-MiniLM-L6-v2 and the cross-encoder built on it (``models.cross_encoder_path``).
MINILM = {"layers": 6, "hidden": 384, "intermediate": 1536}
#: The shape of one of MiniLM's FFN matmuls on a batch of 512 tokens.
PEAK_SHAPE = (512, 384, 1536)
#: The best of several short trials: a peak, not an average over a shared machine's noise.
PEAK_TRIALS = 5
PEAK_TRIAL_SECONDS = 0.25


def encoder_flops(
    token_counts: Sequence[int], *, layers: int, hidden: int, intermediate: int
) -> float:
    """Useful FLOPs of a BERT-style encoder's forward pass over sequences of these lengths.

    For a sequence of ``s`` tokens, with ``L`` layers, hidden size ``h`` and FFN size ``i``::

        2 * s * L * (4 h^2 + 2 h i)     weight matmuls: Q, K, V, output, FFN in and out
                                        (2 FLOPs per multiply-add)
      + 4 * s^2 * h * L                 attention: Q K^T and softmax(.) V, 2 s^2 h each

    summed over the sequences. Padding, embeddings, layer norms, softmax, GELU, pooling
    and the classifier head are not counted: it is the work any runtime must do.
    """
    weights = 4 * hidden * hidden + 2 * hidden * intermediate
    total = 0.0
    for s in token_counts:
        total += 2.0 * s * layers * weights + 4.0 * s * s * hidden * layers
    return total


def minilm_flops(token_counts: Sequence[int]) -> float:
    return encoder_flops(token_counts, **MINILM)


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with torch on ``n`` intra-op threads, then restore the previous count.

    ``configure_torch_threads`` sets the count once per process (the models stage sets 1);
    these stages need the service's configured count for both sides, so they set it
    directly, and its warning about a different request is silenced meanwhile: the
    count it refers to is not the one in force.
    """
    import torch

    previous = torch.get_num_threads()
    resolve_log = logging.getLogger("hybridsearch.models.resolve")
    level = resolve_log.level
    torch.set_num_threads(n)
    resolve_log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
        resolve_log.setLevel(level)


def _best_rate(step: Any, trials: int = PEAK_TRIALS) -> float:
    """Calls per second of ``step``: the best of ``trials`` loops of
    ``PEAK_TRIAL_SECONDS`` each, after a warm-up."""
    for _ in range(3):
        step()
    best = 0.0
    for _ in range(trials):
        calls = 0
        started = time.perf_counter()
        while (elapsed := time.perf_counter() - started) < PEAK_TRIAL_SECONDS:
            step()
            calls += 1
        best = max(best, calls / elapsed)
    return best


def fp32_matmul_gflops(threads: int) -> float:
    """torch.matmul of (m x k) @ (k x n) fp32 in a loop, GFLOP/s on ``threads`` threads."""
    import torch

    m, k, n = PEAK_SHAPE
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(m, k, generator=generator)
    b = torch.randn(k, n, generator=generator)
    out = torch.empty(m, n)
    with torch_threads(threads), torch.inference_mode():
        rate = _best_rate(lambda: torch.matmul(a, b, out=out))
    return 2.0 * m * k * n * rate / 1e9


def int8_matmul_gops(threads: int) -> float | None:
    """ONNX Runtime ``MatMulInteger`` of uint8 (m x k) activations by int8 (k x n) weights
    (a constant, as in a quantized model; 7-bit like ``reduce_range``), GOP/s on
    ``threads`` threads. None without onnx/onnxruntime."""
    try:
        import onnx
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        return None
    m, k, n = PEAK_SHAPE
    rng = np.random.default_rng(0)
    weights = rng.integers(-64, 64, size=(k, n), dtype=np.int8)
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "b"], ["y"])],
        "int8_peak",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [m, k])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [m, n])],
        initializer=[numpy_helper.from_array(weights, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    feeds = {"a": rng.integers(0, 256, size=(m, k), dtype=np.uint8)}
    rate = _best_rate(lambda: session.run(None, feeds))
    return 2.0 * m * k * n * rate / 1e9


def peaks(threads: int, earlier: dict[str, Any] | None = None) -> dict[str, Any]:
    """Both peaks on ``threads`` threads; with ``earlier`` (a previous measurement on the
    same threads), the better of the two for each, so that measuring before and after the
    model stages brackets them."""
    fp32 = fp32_matmul_gflops(threads)
    int8 = int8_matmul_gops(threads)
    if earlier is not None:
        fp32 = max(fp32, earlier["fp32_gflops"])
        if int8 is not None and earlier["int8_gops"] is not None:
            int8 = max(int8, earlier["int8_gops"])
    return {"threads": threads, "shape": list(PEAK_SHAPE), "fp32_gflops": fp32, "int8_gops": int8}


def peak_for(runtime_name: str, measured: dict[str, Any]) -> float | None:
    """The matching peak (GFLOP/s or GOP/s) for a runtime."""
    if runtime_name == "onnx-int8":
        value = measured["int8_gops"]
        return None if value is None else float(value)
    return float(measured["fp32_gflops"])


def throughput(flops: float, seconds: float, peak: float | None) -> dict[str, float | None]:
    """Achieved G(FL)OP/s of a stage and its fraction of ``peak``."""
    achieved = flops / seconds / 1e9 if seconds > 0 else 0.0
    return {"gflops": achieved, "of_peak": achieved / peak if peak else None}
