"""Hashed text: a synthetic bag-of-words corpus of two classes, hashed into scipy CSR
(SGD on sparse input, sparse KMeans), written once to an ``.npz`` file.

``TEXT_DOCS`` training + ``TEXT_TEST_DOCS`` test documents of ~40 Zipf-distributed tokens
with class-dependent frequencies, ``HashingVectorizer(n_features, alternate_sign=False,
norm='l2')``: ~38 non-zeros a row.
"""

from __future__ import annotations

import os

import numpy as np

from .data import block_rows
from .settings import SEED, TEXT_DOCS, TEXT_HASH_FEATURES, TEXT_TEST_DOCS, data_dir

TEXT_VOCAB = 50_000
TEXT_CHUNK_DOCS = 1 << 14


def _text_model(seed, vocab=TEXT_VOCAB):
    """Cumulative token distributions of the two classes.

    Base frequencies follow Zipf-Mandelbrot (1 / (rank + 2.7)); 30% of the tokens lean
    to one class or the other, by a log-odds ratio drawn from an exponential of mean 0.8.
    A linear model on the hashed counts then reaches ~89% test accuracy (the Bayes
    classifier ~97%), the same at 5,000 documents as at 200,000.
    """
    rng = np.random.default_rng([seed, vocab, 1])
    base = 1.0 / (np.arange(1, vocab + 1) + 2.7)
    lean = rng.choice([-1.0, 0.0, 1.0], size=vocab, p=[0.15, 0.7, 0.15])
    log_ratio = lean * rng.exponential(0.8, size=vocab)
    cdfs = []
    for sign in (-0.5, 0.5):
        p = base * np.exp(sign * log_ratio)
        cdfs.append(np.cumsum(p / p.sum()))
    return cdfs


def make_text_documents(n_docs, seed=SEED, split=0, start=0):
    """Documents ``start .. start + n_docs`` of a split (0: train, 1: test) of the synthetic
    corpus, and their 0/1 labels: ~40 tokens ``w<id>`` each (20 + Poisson(20)).

    Generated in chunks of ``TEXT_CHUNK_DOCS`` documents, chunk i from the seed
    (seed, split, i) only: a smaller corpus is a prefix of a larger one.
    """
    if start % TEXT_CHUNK_DOCS:
        raise ValueError(f"start must be a multiple of {TEXT_CHUNK_DOCS}")
    cdfs = _text_model(seed)
    words = [f"w{i}" for i in range(TEXT_VOCAB)]
    docs, labels = [], []
    stop = start + n_docs
    for i in range(start // TEXT_CHUNK_DOCS, (stop + TEXT_CHUNK_DOCS - 1) // TEXT_CHUNK_DOCS):
        # The whole chunk is drawn (its draws do not depend on how much of it is used).
        rng = np.random.default_rng([seed, split, i])
        m = min(TEXT_CHUNK_DOCS, stop - i * TEXT_CHUNK_DOCS)
        y = rng.integers(2, size=TEXT_CHUNK_DOCS)
        lengths = 20 + rng.poisson(20, size=TEXT_CHUNK_DOCS)
        u = rng.random(int(lengths.sum()))
        y, lengths = y[:m], lengths[:m]
        u = u[:int(lengths.sum())]
        tok = np.where(np.repeat(y, lengths) == 1,
                       np.searchsorted(cdfs[1], u, side="right"),
                       np.searchsorted(cdfs[0], u, side="right"))
        tok = np.minimum(tok, TEXT_VOCAB - 1).tolist()
        bounds = np.concatenate([[0], np.cumsum(lengths)]).tolist()
        docs += [" ".join([words[t] for t in tok[a:b]])
                 for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        labels.append(y)
    return docs, np.concatenate(labels) if labels else np.empty(0, np.int64)


def hash_documents(docs, n_features=TEXT_HASH_FEATURES):
    """scikit-learn's ``HashingVectorizer(n_features, alternate_sign=False, norm='l2')``:
    a float64 CSR matrix."""
    from sklearn.feature_extraction.text import HashingVectorizer

    hv = HashingVectorizer(n_features=n_features, alternate_sign=False, norm="l2")
    return hv.transform(docs).tocsr()


def text_path(n_docs=TEXT_DOCS, n_test=TEXT_TEST_DOCS, n_features=TEXT_HASH_FEATURES,
              seed=SEED) -> str:
    name = f"text_{n_docs}+{n_test}_v{TEXT_VOCAB}_h{n_features}_s{seed}_float64.npz"
    return os.path.join(data_dir(), name)


def make_text_file(n_docs=TEXT_DOCS, n_test=TEXT_TEST_DOCS, n_features=TEXT_HASH_FEATURES,
                   seed=SEED) -> str:
    """The hashed corpus (train and test CSR matrices and labels) in one ``.npz``,
    generated once; the path.  Keys ``{split}_{data,indices,indptr,y}`` and
    ``n_features``; read it with :func:`load_text`."""
    import scipy.sparse as sp

    path = text_path(n_docs, n_test, n_features, seed)
    if os.path.exists(path):
        return path
    arrays = {"n_features": np.array(n_features)}
    for split, name, n in ((0, "train", n_docs), (1, "test", n_test)):
        parts, labels = [], []
        for s in range(0, n, 4 * TEXT_CHUNK_DOCS):  # bounded memory for the strings
            docs, y = make_text_documents(min(4 * TEXT_CHUNK_DOCS, n - s), seed, split, s)
            parts.append(hash_documents(docs, n_features))
            labels.append(y)
        X = sp.vstack(parts, format="csr") if parts else sp.csr_matrix((0, n_features))
        X.sort_indices()
        arrays.update({f"{name}_data": X.data, f"{name}_indices": X.indices,
                       f"{name}_indptr": X.indptr,
                       f"{name}_y": np.concatenate(labels) if labels else np.empty(0, int)})
    tmp = f"{path}.{os.getpid()}.tmp.npz"
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def load_text(path, split="train", start=0, stop=None):
    """(CSR matrix, labels) of rows ``start:stop`` of a split of :func:`make_text_file`'s
    file."""
    import scipy.sparse as sp

    with np.load(path) as f:
        indptr = f[f"{split}_indptr"]
        n, d = len(indptr) - 1, int(f["n_features"])
        stop = n if stop is None else min(stop, n)
        a, b = int(indptr[start]), int(indptr[stop])
        data = np.array(f[f"{split}_data"][a:b])
        indices = np.array(f[f"{split}_indices"][a:b])
        y = np.array(f[f"{split}_y"][start:stop])
    X = sp.csr_matrix((data, indices, indptr[start:stop + 1] - a), shape=(stop - start, d))
    return X, y


def _read_text_X(path, split, start, stop):
    return load_text(path, split, start, stop)[0]


def _read_text_y(path, split, start, stop):
    return load_text(path, split, start, stop)[1]


def dask_text(path, chunk_rows, split="train"):
    """(X, y) of a split as dask arrays of ``chunk_rows``-row blocks, X's blocks scipy
    CSR matrices (``meta`` an empty ``csr_matrix``), each task reading its own rows."""
    import dask
    import dask.array as da
    import scipy.sparse as sp

    with np.load(path) as f:
        n = len(f[f"{split}_indptr"]) - 1
        d = int(f["n_features"])
        y_dtype = f[f"{split}_y"].dtype
    read_X = dask.delayed(_read_text_X, pure=True)
    read_y = dask.delayed(_read_text_y, pure=True)
    Xs, ys = [], []
    for s in range(0, n, chunk_rows):
        e = min(n, s + chunk_rows)
        Xs.append(da.from_delayed(read_X(path, split, s, e), shape=(e - s, d),
                                  dtype=np.float64, meta=sp.csr_matrix((0, d))))
        ys.append(da.from_delayed(read_y(path, split, s, e), shape=(e - s,), dtype=y_dtype,
                                  meta=np.empty((0,), y_dtype)))
    return da.concatenate(Xs, axis=0), da.concatenate(ys, axis=0)



class TextData:
    """:func:`make_text_file`'s corpus: train and test (CSR, labels).  ``block_rows=None``:
    blocks of about ``dmlkit.block-size`` bytes of stored entries, as dmlkit cuts CSR."""

    sparse = True

    def __init__(self, path, block_rows=None):
        self.path = path
        self.block_rows = block_rows
        self.name = "hashed text"
        self._train = self._test = None

    @property
    def key(self):
        return (self.path, self.block_rows)

    def train(self):
        if self._train is None:
            self._train = load_text(self.path, "train")
        return self._train

    def test(self):
        with np.load(self.path) as f:
            if len(f["test_indptr"]) <= 1:
                return None
        if self._test is None:
            self._test = load_text(self.path, "test")
        return self._test

    def rows_per_block(self):
        if self.block_rows:
            return self.block_rows
        with np.load(self.path) as f:
            indptr = f["train_indptr"]
            nnz, n = int(indptr[-1]), len(indptr) - 1
        # float64 data + int32 indices per entry, one indptr entry per row
        return block_rows((12 * nnz + 4 * n) / max(1, n))

    def dask_train(self):
        return dask_text(self.path, self.rows_per_block(), "train")

    def head(self, n=4096):
        return load_text(self.path, "train", 0, n)

    def describe(self):
        X, _ = self.train()
        nbytes = X.data.nbytes + X.indices.nbytes + X.indptr.nbytes
        return (f"{self.name}: {X.shape[0]:,} documents x {X.shape[1]:,} hashed features, "
                f"CSR {X.dtype}, {X.nnz / max(1, X.shape[0]):.1f} non-zeros a row, "
                f"{nbytes / 2**20:.0f} MiB")

    def release(self):
        self._train = self._test = None


def text(n_docs=TEXT_DOCS, n_test=TEXT_TEST_DOCS, n_features=TEXT_HASH_FEATURES, seed=SEED,
         block_rows=None) -> TextData:
    """The hashed corpus (generated once) as a :class:`TextData`."""
    return TextData(make_text_file(n_docs, n_test, n_features, seed), block_rows)
