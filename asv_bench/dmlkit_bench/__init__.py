"""dmlkit's benchmark harness, shared by the asv suite (``asv_bench/benchmarks``) and the
comparison scripts (``asv_bench/compare_*.py``); see ``asv_bench/README.md``.

- :mod:`.settings`: sizes (environment variables), where data is cached, the asv
  ``Benchmark`` base and profile.
- :mod:`.data` (dense ``.npy`` data: blobs, classification), :mod:`.text` (hashed text,
  CSR), :mod:`.ratings` (ALS ratings and quality): generators with fixed seeds, cached on
  disk, and the data objects runners take.
- :mod:`.runners`: one runner per compared system and family.
- :mod:`.cluster`: the shared ``LocalCluster``; :mod:`.monitor`: peak RSS and CPU use of
  a process tree; :mod:`.compare`: interleaved rounds and report helpers.

Nothing heavy is imported here: asv imports the benchmark modules to discover them.
Installed with ``pip install -e asv_bench`` (``make bench``), so that dask worker
processes import it like any package.
"""

__version__ = "0.1.0.dev0"
