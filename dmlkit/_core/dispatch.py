"""Kernel dispatch: the block's array type picks the kernel module.

NumPy and scipy.sparse blocks run the family's numba module (``_kernels_cpu``); anything else (CuPy,
``array_api_strict``) runs its array-API module (``_kernels_xp``).  The ``dmlkit.backend``
setting can force ``"xp"`` on NumPy blocks.  CuPy is only ever imported lazily.
"""

from __future__ import annotations

import importlib

import numpy as np
import scipy.sparse as sp

from dmlkit._config import get_config

# a family's kernel modules: <prefix>_kernels_cpu (numba) and <prefix>_kernels_xp
_FAMILY_MODULES = {"cluster": "dmlkit.cluster.", "linear_model": "dmlkit.linear_model.",
                   "glm": "dmlkit.linear_model._glm", "recommendation": "dmlkit.recommendation."}


def backend_of(meta) -> str:
    """'numba' or 'xp' for blocks whose meta (``X._meta``) is ``meta``."""
    forced = get_config("backend")
    sparse = sp.issparse(meta)
    is_numpy = isinstance(meta, np.ndarray) or sparse
    if forced == "numba":
        if not is_numpy:
            raise ValueError(
                f"backend='numba' needs NumPy blocks, got {type(meta).__name__} blocks.")
        return "numba"
    if forced == "xp":
        if sparse:
            raise ValueError("backend='xp' (the array-API kernels) needs dense blocks, got "
                             "scipy.sparse blocks; use backend='auto' or 'numba' for sparse "
                             "input.")
        return "xp"
    return "numba" if is_numpy else "xp"


def get_kernels(family: str, backend: str):
    """The kernel module of ``family`` for ``backend`` ('numba' or 'xp')."""
    suffix = {"numba": "_kernels_cpu", "xp": "_kernels_xp"}[backend]
    return importlib.import_module(_FAMILY_MODULES[family] + suffix)


def to_device(x, backend: str):
    """A host array where ``backend``'s kernels compute: on the GPU (CuPy) for the
    array-API kernels when a CUDA device is present, else as it is."""
    if backend == "xp" and has_cupy_device():
        import cupy

        return cupy.asarray(x)
    return x


def to_numpy(x):
    """A small result (NumPy, CuPy or any DLPack array) as a NumPy array on the host."""
    if isinstance(x, np.ndarray) or np.isscalar(x):
        return np.asarray(x)
    if type(x).__module__.startswith("cupy"):
        return x.get()
    try:
        return np.from_dlpack(x)
    except (TypeError, AttributeError, RuntimeError, BufferError):
        return np.asarray(x)


def has_cupy_device() -> bool:
    """CuPy imports and sees at least one CUDA device (probed lazily, prints nothing)."""
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # noqa: BLE001 - no cupy, no driver, no device
        return False
