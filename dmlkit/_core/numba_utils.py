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
    """A numba kernel compiled serial and parallel; call with ``n_threads=``."""

    def __init__(self, fn, fastmath=False):
        self.py_func = fn
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
        if n_threads > 1 and parallel_available():
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


def block_kernel(fn=None, *, fastmath=False):
    """Decorator: ``@block_kernel`` (or ``@block_kernel(fastmath=FAST_FLAGS)``) makes a
    :class:`BlockKernel`."""
    if fn is None:
        return lambda f: BlockKernel(f, fastmath)
    return BlockKernel(fn, fastmath)


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
