"""Sphinx configuration of dmlkit's documentation (``make docs``).

The pages are Markdown (MyST); the API reference comes from the numpydoc docstrings.
The build needs no network: no intersphinx inventories are fetched.
"""

import os
import sys

# Build from this checkout even where dmlkit is not installed.
sys.path.insert(0, os.path.abspath(".."))

import dmlkit  # noqa: E402

project = "dmlkit"
author = "dmlkit developers"
copyright = "dmlkit developers, BSD-3-Clause"
release = dmlkit.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "numpydoc",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

# MyST: ```{directive} blocks, $-less, heading anchors for the links between pages.
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

# autodoc + numpydoc: the reference pages list members explicitly.
autodoc_default_options = {"member-order": "bysource"}
autodoc_typehints = "none"
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

html_theme = "pydata_sphinx_theme"
html_title = f"dmlkit {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
}
# Offline build: no external resources are needed to build, and the pages link nothing
# at build time.
html_static_path = []

# No intersphinx (offline build): references to other projects' objects cannot resolve,
# so nitpicky mode ignores them; every dmlkit reference must still resolve.
nitpick_ignore_regex = [
    (r"py:.*", r"(sklearn|numpy|np|scipy|pandas|pd|dask|da|dd|distributed|fsspec|cupy)(\..*)?"),
]
