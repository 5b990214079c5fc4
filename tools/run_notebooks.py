"""Execute the notebooks in place, so that their outputs (tables, text, PNG plots) are
saved in the .ipynb files and can be committed.

    .venv/bin/python tools/run_notebooks.py                  # every notebooks/*.ipynb
    .venv/bin/python tools/run_notebooks.py notebooks/fraud_detection.ipynb

Each notebook runs in a fresh ``python3`` kernel of *this* interpreter (the kernel spec is
written to a temporary folder, so no Jupyter configuration is read or changed), from the
``notebooks/`` folder as Jupyter runs it.  A notebook that raises is not written back, and
the script exits with status 1 after the others have run.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"


def _kernel_manager(kernel_dir):
    """A KernelManager for a ``python3`` kernel running ``sys.executable``."""
    from ipykernel.kernelspec import write_kernel_spec
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    write_kernel_spec(pathlib.Path(kernel_dir) / "python3", overrides={
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3"})
    specs = KernelSpecManager(kernel_dirs=[str(kernel_dir)], ensure_native_kernel=False)
    return KernelManager(kernel_name="python3", kernel_spec_manager=specs)


def run(path, timeout):
    """Execute ``path`` in place; return the seconds it took."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    with tempfile.TemporaryDirectory(prefix="dmlkit-kernels-") as kernel_dir:
        client = NotebookClient(nb, km=_kernel_manager(kernel_dir), timeout=timeout,
                                kernel_name="python3", record_timing=False,
                                resources={"metadata": {"path": str(path.parent)}})
        start = time.perf_counter()
        client.execute()
        elapsed = time.perf_counter() - start
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python",
                                 "name": "python3"}
    nbformat.validate(nb)
    nbformat.write(nb, path)
    return elapsed


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=pathlib.Path,
                        help="notebooks to run (default: every notebooks/*.ipynb)")
    parser.add_argument("--timeout", type=int, default=600,
                        help="seconds a cell may run (default 600)")
    args = parser.parse_args(argv)
    paths = [p.resolve() for p in args.notebooks] or sorted(NOTEBOOKS.glob("*.ipynb"))
    failed = []
    for path in paths:
        try:
            elapsed = run(path, args.timeout)
        except Exception as exc:  # report, go on with the others
            failed.append(path.name)
            print(f"{path.name}: FAILED ({type(exc).__name__}: {str(exc)[-2000:]})",
                  flush=True)
            continue
        print(f"{path.name}: {elapsed:.1f} s, {path.stat().st_size / 1024:.0f} KiB",
              flush=True)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
