"""Numba block kernels in a serial and a parallel build, with thread counts set per call.

Every kernel is written once with ``prange`` over a fixed number of row chunks (a
function of the block's shape only, never of the thread count), so the serial and the
parallel build give the same bits.  The parallel build needs a thread-safe numba
threading layer (tbb or omp) because dask runs many kernels at once from its threads;
where none can be loaded every call runs the serial build.
"""

from __future__ import annotations

import os
import threading
import types

import numba
from llvmlite import ir
from numba.core import cgutils
from numba.core import types as nbtypes
from numba.extending import intrinsic
from threadpoolctl import ThreadpoolController

from dmlkit._core.client import local_threads

# Dask calls kernels from several threads at once: only tbb and omp allow that.
if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "threadsafe"
# GNU OpenMP's threads spin at the end of a parallel region by default.  Beside other
# busy threads (dask's other tasks, another worker, any load) a spinning thread holds the
# core the region's last thread needs: on 2 loaded cores one 2-thread Lloyd call took
# 110 ms instead of 0.6 ms.  Waiting passively costs microseconds per call.  Read when
# numba loads its OpenMP layer (at the first parallel call); a user's setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

_parallel_ok: bool | None = None
_probe_lock = threading.Lock()


def _copy_function(fn, suffix):
    # A distinct qualname gives each build its own on-disk cache entry.
    new = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__ + suffix,
                             fn.__defaults__, fn.__closure__)
    new.__qualname__ = fn.__qualname__ + suffix
    new.__module__ = fn.__module__
    new.__doc__ = fn.__doc__
    return new


# Floating-point freedom of the hot numerical kernels: LLVM may reassociate sums (so a
# dot product vectorises to the host's SIMD width) and fuse multiply-adds.  No flag
# assumes NaN or inf away, so NaN checks still work.  The order of every sum is fixed by
# the compiled code alone (never by the data, the chunking or the thread count): results
# stay bit-identical across threads, blocks and workers of one CPU type; another
# instruction set (AVX2 against AVX-512, x86 against ARM) may round differently.
FAST_FLAGS = frozenset({"reassoc", "contract"})


class BlockKernel:
    """A numba kernel compiled serial and parallel; call with ``n_threads=``.

    ``parallel_always``: run the parallel build on one thread too, where a thread-safe
    threading layer loads.  numba compiles the body of a ``prange`` loop as a function of
    its own there, which LLVM can optimise better than the same loop inlined in the
    serial build (ALS's row solves: 15% faster on one thread).  The serial build then
    serves only where no such layer loads; both give the same bits."""

    def __init__(self, fn, fastmath=False, parallel_always=False):
        self.py_func = fn
        self.parallel_always = bool(parallel_always)
        self.__name__ = fn.__name__
        self.__doc__ = fn.__doc__
        fm = set(fastmath) if fastmath else False
        self.serial = numba.njit(nogil=True, cache=True, fastmath=fm)(
            _copy_function(fn, "_serial"))
        self.parallel = numba.njit(nogil=True, cache=True, parallel=True, fastmath=fm)(
            _copy_function(fn, "_parallel"))

    def __call__(self, *args, n_threads: int = 1):
        # Never more threads than this worker (or process) has, whatever the driver asked.
        n_threads = min(int(n_threads), local_threads())
        if (n_threads > 1 or self.parallel_always) and parallel_available():
            old = numba.get_num_threads()
            numba.set_num_threads(min(n_threads, numba.config.NUMBA_NUM_THREADS))
            try:
                return self.parallel(*args)
            finally:
                numba.set_num_threads(old)
        return self.serial(*args)


_blas = ThreadpoolController()


def one_blas_thread():
    """Context: BLAS calls made here (also from inside a numba kernel) use one thread.

    A kernel's parallelism comes from its fixed row chunks; BLAS threads on top would
    oversubscribe the cores, and a multi-threaded BLAS may split a sum differently for
    another thread count, which would change bits."""
    return _blas.limit(limits=1, user_api="blas")


def block_kernel(fn=None, *, fastmath=False, parallel_always=False):
    """Decorator: ``@block_kernel`` (or ``@block_kernel(fastmath=FAST_FLAGS)``) makes a
    :class:`BlockKernel`."""
    if fn is None:
        return lambda f: BlockKernel(f, fastmath, parallel_always)
    return BlockKernel(fn, fastmath, parallel_always)


@numba.njit(parallel=True, cache=True)  # cached: a parallel compile costs ~1 s a process
def _probe(n):  # pragma: no cover - trivial
    s = 0
    for i in numba.prange(n):
        s += i
    return s


def parallel_available() -> bool:
    """Whether a thread-safe numba threading layer loads here (checked once)."""
    global _parallel_ok
    if _parallel_ok is None:
        with _probe_lock:
            if _parallel_ok is None:
                try:
                    _probe(4)
                    _parallel_ok = numba.threading_layer() in ("tbb", "omp")
                except Exception:  # noqa: BLE001 - no layer could be loaded
                    _parallel_ok = False
    return _parallel_ok


def n_chunks_for(n_rows: int, state_bytes: int, min_rows: int = 4096, max_chunks: int = 16,
                 budget: int = 32 << 20) -> int:
    """How many row chunks a kernel splits a block into: depends only on the block's
    shape and the per-chunk state size, so results never depend on thread counts."""
    by_rows = max(1, n_rows // min_rows)
    by_mem = max(1, budget // max(1, state_bytes))
    return int(min(by_rows, max_chunks, by_mem))


@intrinsic
def prefetch(typingctx, arr, flat_index):
    """``prefetch(a, i)`` inside a kernel: hint the CPU to load element ``i`` of the
    C-contiguous array ``a`` (flat index) into cache; no effect on any value, and no
    fault for an index past the end (a prefetch never faults).  For random reads whose
    addresses are known a few iterations ahead (shuffled rows of a block)."""
    if not (isinstance(arr, nbtypes.Array) and arr.layout == "C"
            and isinstance(flat_index, nbtypes.Integer)):
        return None
    sig = nbtypes.void(arr, flat_index)

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        i = context.cast(builder, args[1], signature.args[1], nbtypes.intp)
        ptr = builder.bitcast(builder.gep(ary.data, [i]), ir.IntType(8).as_pointer())
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [ptr.type, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        # read, keep in all cache levels, data cache
        builder.call(fn, [ptr, i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return sig, codegen


# ----------------------------------------------------------------------------------
# Explicit SIMD for intrinsics
# ----------------------------------------------------------------------------------
# LLVM's loop vectoriser picks 256-bit vectors on x86 CPUs tuned to prefer them (the
# AVX-512 Xeons, this Emerald Rapids one included), which halves the arithmetic a kernel
# can do per cycle.
# An intrinsic that spells its vectors out gets the full width: 64-byte vectors are one
# AVX-512 register, two AVX2 registers or four NEON ones (LLVM splits them where the
# hardware is narrower), so the same code is correct everywhere.  Every lane computes
# exactly what the scalar code would (explicit llvm.fma, ordered compares, no fast-math
# flags), so a value never depends on where a row falls in a vector.
VECTOR_BYTES = 64


def vector_lanes(itemsize: int) -> int:
    """Lanes of one :data:`VECTOR_BYTES` vector of items of ``itemsize`` bytes."""
    return VECTOR_BYTES // int(itemsize)


def vector_type(context, dtype):
    """The LLVM vector type of :data:`VECTOR_BYTES` of the numba float ``dtype``."""
    return ir.VectorType(context.get_value_type(dtype), vector_lanes(dtype.bitwidth // 8))


def vector_pointer(builder, data, flat_index, vty):
    """Pointer to the vector of ``vty`` that starts at element ``flat_index`` of ``data``
    (an array's data pointer)."""
    return builder.bitcast(builder.gep(data, [flat_index]), vty.as_pointer())


def vector_load(builder, data, flat_index, vty):
    """Unaligned load of the ``vty.count`` elements from ``flat_index`` on."""
    elt = vty.element
    align = 8 if isinstance(elt, ir.DoubleType) else 4
    return builder.load(vector_pointer(builder, data, flat_index, vty), align=align)


def vector_splat(builder, scalar, vty):
    """A vector of ``vty`` with ``scalar`` in every lane."""
    i32 = ir.IntType(32)
    v = builder.insert_element(ir.Constant(vty, ir.Undefined), scalar, i32(0))
    return builder.shuffle_vector(v, ir.Constant(vty, ir.Undefined),
                                  ir.Constant(ir.VectorType(i32, vty.count), [0] * vty.count))


def vector_fma(builder, a, b, c):
    """``a * b + c`` in every lane with one rounding (llvm.fma: always fused, so scalar
    and vector code give the same bits)."""
    vty = a.type
    bits = 64 if isinstance(vty.element, ir.DoubleType) else 32
    fn = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(vty, [vty] * 3), f"llvm.fma.v{vty.count}f{bits}")
    return builder.call(fn, [a, b, c])


def vector_first_argmin(builder, vec):
    """``(value, lane)``: the smallest lane of ``vec`` and the first lane holding it (i64),
    as a scan ``if v[j] < best`` from lane 0 would find them (for lanes without NaN).
    Where no lane equals the minimum (it is NaN), lane 0 and a NaN value.

    The minimum comes from a butterfly of ordered ``<`` selects (every lane ends with the
    minimum of all lanes; exact, so its order does not matter), the lane from the first
    set bit of ``vec == min``."""
    n = vec.type.count
    i32 = ir.IntType(32)
    m = vec
    s = n // 2
    while s:
        other = builder.shuffle_vector(
            m, m, ir.Constant(ir.VectorType(i32, n), [i ^ s for i in range(n)]))
        m = builder.select(builder.fcmp_ordered("<", m, other), m, other)
        s //= 2
    mty = ir.IntType(n)
    mask = builder.bitcast(builder.fcmp_ordered("==", vec, m), mty)
    cttz = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(mty, [mty, ir.IntType(1)]), f"llvm.cttz.i{n}")
    none = builder.icmp_unsigned("==", mask, mty(0))
    lane = builder.select(none, mty(0), builder.call(cttz, [mask, ir.IntType(1)(1)]))
    return builder.extract_element(m, i32(0)), builder.zext(lane, ir.IntType(64))


@intrinsic
def add_row_f64(typingctx, out, b, x, i, scale, scaled):
    """``add_row_f64(out, b, x, i, w, scaled)`` inside a kernel: ``out[b, :m] +=
    float64(x[i, :m])`` (times ``w`` if ``scaled``: a product, then a sum, each rounded,
    as the scalar code ``out[b, f] += w * float64(x[i, f])``), for the whole vectors of
    the row, ``m = d - d % lanes`` (8 float64 lanes); returns ``m`` for the caller to add
    the rest.  ``out`` (., d) float64 and ``x`` (., d) float, both C-contiguous; indices
    unchecked."""
    if not (isinstance(out, nbtypes.Array) and out.layout == "C" and out.ndim == 2
            and out.dtype == nbtypes.float64 and isinstance(x, nbtypes.Array)
            and x.layout == "C" and x.ndim == 2 and isinstance(x.dtype, nbtypes.Float)
            and isinstance(b, nbtypes.Integer) and isinstance(i, nbtypes.Integer)
            and isinstance(scale, (nbtypes.Float, nbtypes.Integer))
            and isinstance(scaled, nbtypes.Boolean)):
        return None
    sig = nbtypes.intp(out, b, x, i, scale, scaled)

    def codegen(context, builder, signature, args):
        out_t, b_t, x_t, i_t, w_t, _ = signature.args
        oa = context.make_array(out_t)(context, builder, args[0])
        xa = context.make_array(x_t)(context, builder, args[2])
        intp = context.get_value_type(nbtypes.intp)
        bv = context.cast(builder, args[1], b_t, nbtypes.intp)
        iv = context.cast(builder, args[3], i_t, nbtypes.intp)
        w = context.cast(builder, args[4], w_t, nbtypes.float64)
        vd = vector_type(context, nbtypes.float64)
        vx = ir.VectorType(context.get_value_type(x_t.dtype), vd.count)
        d = builder.extract_value(xa.shape, 1)
        whole = builder.mul(builder.udiv(d, intp(vd.count)), intp(vd.count))
        obase = builder.mul(bv, builder.extract_value(oa.shape, 1))
        xbase = builder.mul(iv, d)
        ws = vector_splat(builder, w, vd)
        with cgutils.for_range_slice(builder, intp(0), whole, intp(vd.count)) as (f, _):
            xv = vector_load(builder, xa.data, builder.add(xbase, f), vx)
            if vx != vd:
                xv = builder.fpext(xv, vd)
            xv = builder.select(args[5], builder.fmul(ws, xv), xv)
            p = vector_pointer(builder, oa.data, builder.add(obase, f), vd)
            builder.store(builder.fadd(builder.load(p, align=8), xv), p, align=8)
        return whole

    return sig, codegen
