"""Data sets as lazy dask collections: real ones read from files (``load_movielens``) and
synthetic ones (``make_blobs``, ``make_ratings``) generated block by block, lazily, from a
seed and the block index.

Each block's rows come from ``np.random.default_rng([random_state, block_index])``, so
the data set never has to exist in one place, a lost block is regenerated identically,
and the same call always gives the same data whatever the cluster.
"""

from __future__ import annotations

import functools
import io
import math
import numbers
import os
import posixpath
import re

import dask.array as da
import numpy as np
from dask.base import tokenize


def _blobs_block(block_info=None, *, centers, cluster_std, seed, out_dtype):
    info = block_info[None]
    (start, stop), _ = info["array-location"]
    index = info["chunk-location"][0]
    rng = np.random.default_rng([seed, index])
    n = stop - start
    labels = rng.integers(0, centers.shape[0], n)
    X = centers[labels] + rng.standard_normal((n, centers.shape[1])) * cluster_std
    return X.astype(out_dtype, copy=False)


def make_blobs(n_samples=100_000, n_features=2, centers=3, *, cluster_std=1.0,
               center_box=(-10.0, 10.0), chunks=100_000, random_state=0, dtype=np.float64):
    """Isotropic Gaussian blobs as a lazy dask array (like scikit-learn's ``make_blobs``).

    Returns ``(X, centers)``: X of shape (n_samples, n_features) chunked by ``chunks``
    rows, and the true centres as a NumPy array.
    """
    if isinstance(centers, int):
        rng = np.random.default_rng([random_state, 2**31])
        centers = rng.uniform(center_box[0], center_box[1], (centers, n_features))
    centers = np.asarray(centers, dtype=np.float64)
    if centers.ndim != 2 or centers.shape[1] != n_features:
        raise ValueError(f"centers must have shape (n_centers, {n_features}), "
                         f"got {centers.shape}.")
    normalized = da.core.normalize_chunks((chunks, n_features), (n_samples, n_features))
    X = da.map_blocks(
        _blobs_block, chunks=normalized, dtype=dtype, meta=np.empty((0, 0), dtype=dtype),
        name="dmlkit-blobs-" + tokenize(centers, cluster_std, random_state, normalized,
                                        np.dtype(dtype).str),
        centers=centers, cluster_std=cluster_std, seed=random_state, out_dtype=dtype)
    return X, centers


# --------------------------------------------------------------------------------------
# MovieLens ratings
# --------------------------------------------------------------------------------------

_RATING_DTYPES = {"user_id": "int64", "item_id": "int64", "rating": "float32",
                  "timestamp": "int64"}
# File names looked for in a directory, best first.
_MOVIELENS_NAMES = ("ratings.parquet", "ratings.csv", "ratings.dat", "u.data")
# Column names accepted in a ratings.csv header or a Parquet schema.
_COLUMN_ALIASES = {
    "user_id": ("user_id", "userId", "userid", "user"),
    "item_id": ("item_id", "movieId", "movie_id", "itemId", "itemid", "item"),
    "rating": ("rating",),
    "timestamp": ("timestamp",),
}
# Text formats: separator the C parser splits on, fields a line has when split on it,
# the real field separator, and how a line looks (for error messages).
_TEXT_FORMATS = {
    "csv": (",", 4, b",", "user,item,rating,timestamp"),
    # "::" is split on ":" (fast C parser) and the empty fields in between are dropped.
    "dat": (":", 7, b"::", "user::item::rating::timestamp"),
    "data": ("\t", 4, b"\t", "user<TAB>item<TAB>rating<TAB>timestamp"),
}


def _movielens_format(name):
    """Format of a file from its name: 'parquet', 'csv', 'dat', 'data' or None."""
    lower = name.lower()
    if lower.endswith((".parquet", ".parq", ".pq")):
        return "parquet"
    if lower.endswith(".csv"):
        return "csv"
    if lower.endswith(".dat"):
        return "dat"
    if lower.endswith(".data") or re.fullmatch(r"u[1-5ab]\.(base|test)", lower):
        return "data"
    return None


def _resolve_movielens(url, storage_options):
    import fsspec

    fs, root = fsspec.core.url_to_fs(url, **(storage_options or {}))
    root = root.rstrip("/") or root
    fmt = _movielens_format(posixpath.basename(root))
    is_dir = fs.isdir(root)
    if is_dir and fmt != "parquet":
        for name in _MOVIELENS_NAMES:
            candidate = f"{root}/{name}"
            if fs.exists(candidate):
                return fs, candidate, _movielens_format(name)
        raise FileNotFoundError(
            f"No MovieLens ratings file in directory {url!r}: looked for "
            f"{', '.join(_MOVIELENS_NAMES)}.")
    if not is_dir and not fs.exists(root):
        raise FileNotFoundError(f"No such MovieLens ratings file or directory: {url!r}.")
    if fmt is None:
        raise ValueError(
            f"Cannot tell the MovieLens format of {url!r} from its name: expected "
            f"{', '.join(_MOVIELENS_NAMES)} (or a *.parquet, *.csv, *.dat or *.data file), "
            "or a directory holding one.")
    return fs, root, fmt


def _canonical_columns(names, url, what):
    """Map canonical column -> the file's column name, or raise a ValueError."""
    found = {}
    for canonical, aliases in _COLUMN_ALIASES.items():
        hits = [n for n in names if n in aliases]
        if len(hits) == 1:
            found[canonical] = hits[0]
    if len(found) != len(_COLUMN_ALIASES):
        missing = [c for c in _COLUMN_ALIASES if c not in found]
        raise ValueError(
            f"{url}: {what} {list(names)} does not name the MovieLens columns {missing} "
            "(expected userId,movieId,rating,timestamp or user_id,item_id,rating,timestamp).")
    return found


def _empty_ratings(columns=tuple(_RATING_DTYPES)):
    import pandas as pd

    return pd.DataFrame({c: np.empty(0, dtype=_RATING_DTYPES[c]) for c in columns})


def _is_number(field, integer):
    field = field.strip().strip(b'"')
    try:
        value = float(field)
    except ValueError:
        return False
    if integer:
        return math.isfinite(value) and value.is_integer()
    return not math.isnan(value)


def _explain_bad_block(data, *, fmt, order, url, offset):
    """Find the first malformed line of a block (slow; only run once parsing has failed)."""
    _, nfields, sep, layout = _TEXT_FORMATS[fmt]
    pos = offset
    for raw in data.split(b"\n"):
        line = raw.rstrip(b"\r")
        where = f"{url}: malformed line at byte {pos}: {line[:200]!r}"
        pos += len(raw) + 1
        if not line.strip():
            continue
        fields = line.split(sep)
        if len(fields) != 4:
            return f"{where}: expected 4 fields ({layout}), found {len(fields)}."
        for name, field in zip(order, fields, strict=True):
            if not _is_number(field, integer=name != "rating"):
                kind = "a number" if name == "rating" else "an integer"
                return f"{where}: {name} {field.decode(errors='replace')!r} is not {kind}."
    return None


def _parse_ratings_block(data, *, fmt, order, url, offset):
    """Parse one block of a MovieLens text file (bytes) into a ratings DataFrame."""
    import pandas as pd

    pandas_sep, nfields, _, _ = _TEXT_FORMATS[fmt]
    if fmt == "dat":
        positions = dict(zip(order, (0, 2, 4, 6), strict=True))
        dtypes = {1: "float64", 3: "float64", 5: "float64"}   # the empty fields
    else:
        positions = {name: i for i, name in enumerate(order)}
        dtypes = {}
    dtypes.update({positions[name]: dtype for name, dtype in _RATING_DTYPES.items()})
    error = cause = None
    # The C parser expects as many fields as the first line has, so an over-long first
    # line would be truncated with a warning: check it before parsing.
    first = data.lstrip(b"\r\n").split(b"\n", 1)[0]
    if first and first.count(pandas_sep.encode()) + 1 != nfields:
        error = "wrong number of fields"
    else:
        try:
            raw = pd.read_csv(io.BytesIO(data), sep=pandas_sep, header=None,
                              names=list(range(nfields)), index_col=False, dtype=dtypes,
                              engine="c", skip_blank_lines=True)
        except ValueError as exc:   # pandas' ParserError is a ValueError too
            error = cause = exc
        else:
            bad = ~np.isfinite(raw[positions["rating"]].to_numpy())
            if fmt == "dat":
                bad |= raw[[1, 3, 5]].notna().to_numpy().any(axis=1)
            if bad.any():
                error = "missing or extra fields"
    if error is not None:
        message = _explain_bad_block(data, fmt=fmt, order=order, url=url, offset=offset)
        raise ValueError(message or f"{url}: malformed MovieLens data in the block starting "
                         f"at byte {offset}: {error}") from cause
    return pd.DataFrame({name: raw[positions[name]].astype(dtype)
                         for name, dtype in _RATING_DTYPES.items()})


def _read_ratings_block(part, *, fs, path, url, fmt, order, version):
    """One partition of a MovieLens text file: the lines that start in its byte range.

    ``order`` is the file's column order. ``version`` (a hash of the file's size and
    modification time) is unused here; it makes the task names change when the file
    does. (No ``columns`` argument: dask would take it for column projection.)
    """
    from fsspec.utils import read_block

    offset, length = part
    with fs.open(path, "rb") as f:
        data = read_block(f, offset, length, delimiter=b"\n") if length else b""
    if fmt == "csv" and offset == 0:   # drop the header
        newline = data.find(b"\n")
        header_length = len(data) if newline < 0 else newline + 1
        data, offset = data[header_length:], header_length
    return _parse_ratings_block(data, fmt=fmt, order=order, url=url, offset=offset)


def _csv_columns(fs, path, url):
    with fs.open(path, "rb") as f:
        head = f.read(1 << 16)
    line = head.split(b"\n", 1)[0].rstrip(b"\r").removeprefix(b"\xef\xbb\xbf")
    names = [n.strip().strip('"') for n in line.decode("utf-8", errors="replace").split(",")]
    if len(names) != 4:
        raise ValueError(f"{url}: expected a header of 4 columns (userId,movieId,rating,"
                         f"timestamp), found {line[:200]!r}.")
    found = _canonical_columns(names, url, "header")
    rename = {v: k for k, v in found.items()}
    return tuple(rename[n] for n in names)


def _read_movielens_text(fs, path, url, fmt, blocksize):
    import dask.dataframe as dd
    from dask.utils import parse_bytes

    if blocksize is not None:
        if isinstance(blocksize, str):
            blocksize = parse_bytes(blocksize)
        if (not isinstance(blocksize, numbers.Integral) or isinstance(blocksize, bool)
                or blocksize < 1):
            raise ValueError(f"blocksize must be a positive number of bytes or None, "
                             f"got {blocksize!r}.")
    size = fs.size(path)
    order = _csv_columns(fs, path, url) if fmt == "csv" else tuple(_RATING_DTYPES)
    step = int(blocksize) if blocksize else max(size, 1)
    parts = [(offset, min(step, size - offset)) for offset in range(0, max(size, 1), step)]
    return dd.from_map(_read_ratings_block, parts, meta=_empty_ratings(),
                       label="load-movielens", fs=fs, path=path, url=url, fmt=fmt,
                       order=order, version=fs.ukey(path))


def _finish_parquet_partition(df, *, rename, url):
    if df[list(rename)].isna().to_numpy().any():
        raise ValueError(f"{url}: missing values in the MovieLens ratings.")
    df = df.rename(columns=rename)
    return df.astype(_RATING_DTYPES)


def _read_movielens_parquet(fs, path, url):
    import dask.dataframe as dd

    try:
        df = dd.read_parquet(path, filesystem=fs)
    except (ValueError, OSError) as exc:   # pyarrow's ArrowInvalid is a ValueError
        raise ValueError(f"{url}: cannot read as Parquet: {exc}") from exc
    found = _canonical_columns(list(df.columns), url, "Parquet columns")
    for name, column in found.items():
        kind = df[column].dtype.kind
        if kind not in ("iuf" if name == "rating" else "iu"):
            raise ValueError(f"{url}: column {column!r} has dtype {df[column].dtype}, "
                             f"expected {'a number' if name == 'rating' else 'an integer'}.")
    df = df[[found[name] for name in _RATING_DTYPES]]
    return df.map_partitions(_finish_parquet_partition,
                             rename={v: k for k, v in found.items()}, url=url,
                             meta=_empty_ratings())


def load_movielens(path, *, blocksize="64MiB", storage_options=None):
    """Lazily load MovieLens ratings as a dask DataFrame.

    Parameters
    ----------
    path : str or os.PathLike
        A local path or any fsspec URL: either a ratings file of a MovieLens release or a
        directory holding one. The format is told from the file name:

        - ``*.parquet`` (e.g. ``ratings.parquet``, a file or a Parquet data-set directory):
          columns ``user_id, item_id, rating, timestamp`` (``userId``/``movieId`` accepted);
        - ``*.csv`` (``ratings.csv`` of ML-20M, ML-25M, ml-latest): comma-separated with a
          header ``userId,movieId,rating,timestamp`` (columns in any order);
        - ``*.dat`` (``ratings.dat`` of ML-1M, ML-10M): ``user::item::rating::timestamp``,
          no header;
        - ``*.data`` (``u.data`` of ML-100k, and its ``u1.base`` ... ``ub.test`` splits):
          tab-separated ``user item rating timestamp``, no header.

        In a directory, ``ratings.parquet``, ``ratings.csv``, ``ratings.dat`` and
        ``u.data`` are looked for in that order.
    blocksize : int, str or None, default "64MiB"
        Bytes per partition of a text file (cut at line boundaries); None for one
        partition per file. Parquet partitions follow the file's row groups.
    storage_options : dict, optional
        Passed to fsspec to open ``path`` (credentials and such).

    Returns
    -------
    dask.dataframe.DataFrame
        Columns ``user_id`` (int64), ``item_id`` (int64), ``rating`` (float32) and
        ``timestamp`` (int64, Unix seconds), ids as in the file (1-based in MovieLens),
        rows in file order, index unknown (0, 1, ... within each partition).

    Nothing is read before the result is computed, except the file system's metadata,
    the header of a CSV file and the footer of a Parquet file.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist, or is a directory without any of the names above.
    ValueError
        The file name tells no format, or the content is malformed (a wrong number of
        fields, a non-numeric id, a missing rating, a bad header or Parquet schema); the
        message names the file (and the offending line of a text file). Errors in the
        content of a text file are raised when the partition holding them is computed.
    """
    url = os.fspath(path)
    if not isinstance(url, str):
        raise ValueError(f"path must be a str or os.PathLike of str, got {path!r}.")
    fs, resolved, fmt = _resolve_movielens(url, storage_options)
    local = "file" in ((fs.protocol,) if isinstance(fs.protocol, str) else fs.protocol)
    shown = resolved if local else fs.unstrip_protocol(resolved)   # named in errors
    if fmt == "parquet":
        return _read_movielens_parquet(fs, resolved, shown)
    return _read_movielens_text(fs, resolved, shown, fmt, blocksize)


# --------------------------------------------------------------------------------------
# Synthetic ratings from a planted low-rank model
# --------------------------------------------------------------------------------------

_FACTOR_STREAM = 2**32      # factor streams are [seed, 2**32, ...]; partitions use [seed, i]
_USER_BLOCK = 4096          # rows of U are drawn in fixed blocks of users
# A user's items are drawn by rejection (with replacement, repeats dropped) when the
# popularity mass outside its k most popular items is at least _MIN_TAIL, for at most
# _MAX_ROUNDS rounds; by the Gumbel-top-k trick over all items otherwise.
_MIN_TAIL = 0.25
_MAX_ROUNDS = 32
_ROWS_PER_PARTITION = 1_000_000     # default partition size of make_ratings
_IMPLICIT_MAX_LOG_RATE = 30.0       # cap on the log Poisson rate of implicit ratings


def _user_factors(seed, start, stop, rank):
    """Rows ``start:stop`` of U; user u's row depends only on (seed, u, rank)."""
    first, last = start // _USER_BLOCK, (stop - 1) // _USER_BLOCK
    U = np.concatenate([
        np.random.default_rng([seed, _FACTOR_STREAM, 1, b]).standard_normal((_USER_BLOCK, rank))
        for b in range(first, last + 1)])
    offset = first * _USER_BLOCK
    return U[start - offset:stop - offset] * rank ** -0.25


@functools.lru_cache(maxsize=4)
def _item_model(seed, n_items, rank, popularity):
    """V, the items' log-weights, their CDF (in id order), and ``tail[k]``: the mass left
    outside the k most popular items."""
    V = np.random.default_rng([seed, _FACTOR_STREAM, 0]).standard_normal((n_items, rank))
    V *= rank ** -0.25
    by_popularity = np.random.default_rng([seed, _FACTOR_STREAM, 2]).permutation(n_items)
    sorted_log_w = -popularity * np.log1p(np.arange(n_items))
    log_w = np.empty(n_items)
    log_w[by_popularity] = sorted_log_w
    cdf = np.cumsum(np.exp(log_w))
    cdf /= cdf[-1]
    cdf[-1] = 1.0
    sorted_w = np.exp(sorted_log_w)
    tail = np.concatenate([[1.0], 1.0 - np.cumsum(sorted_w) / sorted_w.sum()])
    for a in (V, log_w, cdf, tail):
        a.flags.writeable = False
    return V, log_w, cdf, tail


def _ratings_per_user(rng, n_users, total, n_items):
    """``total`` ratings over ``n_users`` users: 1 each, the rest multinomial (uniform),
    at most ``n_items`` each (any excess goes to the users with room left)."""
    counts = 1 + rng.multinomial(total - n_users, np.full(n_users, 1.0 / n_users))
    while (excess := int(np.maximum(counts - n_items, 0).sum())):
        np.minimum(counts, n_items, out=counts)
        room = n_items - counts
        counts += rng.multinomial(excess, room / room.sum())
    return counts


def _gumbel_top_k(rng, users, need, log_w, exclude):
    """Keys ``user * n_items + item`` of ``need[user]`` distinct items per user, drawn
    without replacement with probability proportional to ``exp(log_w)`` among the items
    whose key is not in ``exclude`` (sorted)."""
    n_items = log_w.size
    keys = []
    step = max(1, (1 << 21) // n_items)
    for s in range(0, users.size, step):
        us = users[s:s + step]
        g = log_w + rng.gumbel(size=(us.size, n_items))
        if exclude.size:
            mine = exclude[np.isin(exclude // n_items, us)]
            g[np.searchsorted(us, mine // n_items), mine % n_items] = -np.inf
        order = np.argsort(-g, axis=1)
        items = order[np.arange(n_items) < need[us][:, None]]
        keys.append(np.repeat(us, need[us]) * n_items + items)
    return np.concatenate(keys) if keys else np.empty(0, np.int64)


def _sample_items(rng, counts, log_w, cdf, tail):
    """Sorted keys ``user * n_items + item``: ``counts[user]`` distinct items per user,
    drawn without replacement with probability proportional to the popularity weights.

    Users whose items leave enough mass outside them are sampled by drawing with
    replacement and dropping repeats (the same law as sequential sampling without
    replacement, at a cost proportional to the output); the others, and any user still
    short after a few rounds, by the Gumbel-top-k trick over all items.
    """
    n_items = cdf.size
    need = counts.astype(np.int64)
    sparse = tail[counts] >= _MIN_TAIL
    chosen = np.empty(0, np.int64)
    pending = np.flatnonzero(sparse)
    for _ in range(_MAX_ROUNDS):
        if not pending.size:
            break
        draws = np.ceil(need[pending] * (1.25 / tail[counts[pending]])).astype(np.int64) + 2
        users = np.repeat(pending, draws)
        items = np.minimum(np.searchsorted(cdf, rng.random(users.size), side="right"),
                           n_items - 1)
        keys = users * n_items + items
        if chosen.size:
            at = np.minimum(np.searchsorted(chosen, keys), chosen.size - 1)
            keys = keys[chosen[at] != keys]
        _, first = np.unique(keys, return_index=True)
        keys = keys[np.sort(first)]            # new items, in the order they were drawn
        users = keys // n_items                # non-decreasing
        keys = keys[np.arange(keys.size) - np.searchsorted(users, users) < need[users]]
        need -= np.bincount(keys // n_items, minlength=need.size)
        chosen = np.sort(np.concatenate([chosen, keys]))
        pending = pending[need[pending] > 0]
    rest = np.union1d(pending, np.flatnonzero(~sparse))
    if rest.size:
        chosen = np.sort(np.concatenate([chosen, _gumbel_top_k(rng, rest, need, log_w,
                                                               chosen)]))
    return chosen


def _ratings_partition(part, *, seed, n_items, rank, noise, popularity, implicit):
    import pandas as pd

    index, start, stop, total = part
    rng = np.random.default_rng([seed, index])
    V, log_w, cdf, tail = _item_model(seed, n_items, rank, popularity)
    counts = _ratings_per_user(rng, stop - start, total, n_items)
    keys = _sample_items(rng, counts, log_w, cdf, tail)
    local, items = np.divmod(keys, n_items)
    U = _user_factors(seed, start, stop, rank)
    score = np.einsum("ij,ij->i", U[local], V[items]) + noise * rng.standard_normal(keys.size)
    if implicit:
        rating = 1 + rng.poisson(np.exp(np.minimum(score, _IMPLICIT_MAX_LOG_RATE)))
    else:
        rating = np.clip(3.0 + score, 1.0, 5.0)
    users = local + start
    return pd.DataFrame({"user_id": users, "item_id": items,
                         "rating": rating.astype(np.float32)},
                        index=pd.Index(users))


def _check_int(name, value, minimum=1):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def _check_real(name, value):
    if (isinstance(value, bool) or not isinstance(value, numbers.Real)
            or not math.isfinite(value) or value < 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}.")
    return float(value)


def _check_bool(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False, got {value!r}.")
    return bool(value)


def _seed_of(random_state):
    if random_state is None:
        return int(np.random.SeedSequence().entropy)
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(2**63))
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(2**63 - 1, dtype=np.int64))
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        if random_state >= 0:
            return int(random_state)
    raise ValueError("random_state must be None, an integer >= 0 or a NumPy Generator or "
                     f"RandomState, got {random_state!r}.")


def make_ratings(n_users=1000, n_items=500, n_ratings=20000, *, rank=8, noise=0.1,
                 popularity=1.0, implicit=False, npartitions=None, random_state=None,
                 return_factors=False):
    """Synthetic user-item ratings from a planted low-rank model, as a lazy dask DataFrame.

    The model, for a seed ``s`` (``random_state``):

    - true factors ``U`` (n_users, rank) and ``V`` (n_items, rank) with i.i.d. entries
      ``N(0, 1/sqrt(rank))``, so that a score ``U[u] @ V[j]`` has unit variance. Row u of
      U is drawn from ``default_rng([s, 2**32, 1, u // 4096])``, V from
      ``default_rng([s, 2**32, 0])``: they depend on neither ``npartitions`` nor
      ``n_users``;
    - item popularity: item ``order[r]`` has weight ``(r + 1) ** -popularity``, where
      ``order`` is a permutation of the items drawn from ``default_rng([s, 2**32, 2])``
      (so the popular items are not the low ids); ``popularity=0`` is uniform, 1 is Zipf;
    - users are split into ``npartitions`` contiguous ranges (as equal as can be);
      partition i, drawn from ``default_rng([s, i])`` alone, gets
      ``n_ratings * stop // n_users - n_ratings * start // n_users`` ratings for its
      users ``start:stop``: one per user, the rest spread uniformly at random over its
      users (multinomial), at most ``n_items`` per user. The total is therefore exactly
      ``n_ratings``;
    - each user's items are distinct, drawn without replacement with probability
      proportional to the popularity weights (sequentially, as ``rng.choice(n_items, k,
      replace=False, p=w / w.sum())`` would);
    - ``z = U[u] @ V[j] + noise * N(0, 1)``; explicit ratings (``implicit=False``) are
      ``clip(3 + z, 1, 5)``: continuous "stars" centred on 3 (about 2.3% at each bound
      when noise is small); implicit ones (``implicit=True``) are interaction counts
      ``1 + Poisson(exp(min(z, 30)))``, integers >= 1 (stored as float32) whose log grows
      with the score. In both cases which items a user rated depends on popularity only.

    Parameters
    ----------
    n_users, n_items : int >= 1
    n_ratings : int, n_users <= n_ratings <= n_users * n_items
        Rows in the result (every user has at least one rating).
    rank : int >= 1
    noise : float >= 0
        Standard deviation of the Gaussian noise added to the unit-variance scores.
    popularity : float >= 0
        Exponent of the power law of item popularity.
    implicit : bool
    npartitions : int, optional
        Partitions, 1 to n_users (default: one per million ratings).
    random_state : None, int >= 0, numpy Generator or RandomState
        Seed. None (or a generator) draws one seed at call time, so the returned
        collection is still the same data each time it is computed.
    return_factors : bool
        Also return ``U`` and ``V`` as NumPy arrays (float64).

    Returns
    -------
    df : dask.dataframe.DataFrame
        Columns ``user_id`` (int64, 0 to n_users - 1), ``item_id`` (int64, 0 to
        n_items - 1) and ``rating`` (float32); the index is the user id too, with known
        divisions at the partitions' first users; rows sorted by (user_id, item_id). Each
        partition is the same whichever scheduler computes it, and whether or not the
        others are computed.
    U, V : ndarray, only with ``return_factors=True``
    """
    import dask.dataframe as dd
    import pandas as pd

    n_users = _check_int("n_users", n_users)
    n_items = _check_int("n_items", n_items)
    n_ratings = _check_int("n_ratings", n_ratings)
    if not n_users <= n_ratings <= n_users * n_items:
        raise ValueError(f"n_ratings must be between n_users ({n_users}; every user has a "
                         f"rating) and n_users * n_items ({n_users * n_items}; pairs are "
                         f"distinct), got {n_ratings}.")
    rank = _check_int("rank", rank)
    noise = _check_real("noise", noise)
    popularity = _check_real("popularity", popularity)
    implicit = _check_bool("implicit", implicit)
    return_factors = _check_bool("return_factors", return_factors)
    if npartitions is None:
        npartitions = min(n_users, -(-n_ratings // _ROWS_PER_PARTITION))
    npartitions = _check_int("npartitions", npartitions)
    if npartitions > n_users:
        raise ValueError(f"npartitions must be at most n_users ({n_users}), "
                         f"got {npartitions}.")
    seed = _seed_of(random_state)

    bounds = [n_users * i // npartitions for i in range(npartitions + 1)]
    parts = [(i, start, stop, n_ratings * stop // n_users - n_ratings * start // n_users)
             for i, (start, stop) in enumerate(zip(bounds[:-1], bounds[1:], strict=True))]
    empty = np.empty(0, np.int64)
    meta = pd.DataFrame({"user_id": empty, "item_id": empty,
                         "rating": np.empty(0, np.float32)}, index=pd.Index(empty))
    df = dd.from_map(_ratings_partition, parts, meta=meta,
                     divisions=(*bounds[:-1], n_users - 1), label="make-ratings",
                     seed=seed, n_items=n_items, rank=rank, noise=noise,
                     popularity=popularity, implicit=implicit)
    if not return_factors:
        return df
    U = _user_factors(seed, 0, n_users, rank)
    V = np.array(_item_model(seed, n_items, rank, popularity)[0])
    return df, U, V


# --------------------------------------------------------------------------------------
# Synthetic card transactions with rare fraud
# --------------------------------------------------------------------------------------

_TRANSACTION_COLUMNS = {"amount": "float64", "hour": "float64", "distance_km": "float64",
                        "merchant_risk": "float64", "n_last_24h": "int64", "online": "int8",
                        "foreign": "int8", "is_fraud": "int8"}


def _transactions_partition(part, *, seed, fraud_rate):
    import pandas as pd

    index, start, stop = part
    n = stop - start
    rng = np.random.default_rng([seed, index])
    fraud = rng.random(n) < fraud_rate
    # Every feature is drawn for both classes and picked by the label, so a row's values
    # depend only on (seed, block, position), whatever the fraud rate of its neighbours.
    amount = np.where(fraud, rng.lognormal(4.2, 1.3, n), rng.lognormal(3.4, 1.0, n))
    day = rng.normal(14.0, 4.0, n)
    night = rng.normal(2.5, 2.5, n)
    hour = np.mod(np.where(fraud & (rng.random(n) < 0.5), night, day), 24.0)
    far = fraud & (rng.random(n) < 0.5)
    distance = np.where(far, rng.exponential(150.0, n), rng.exponential(12.0, n))
    risk = np.where(fraud, rng.beta(3.0, 5.0, n), rng.beta(2.0, 8.0, n))
    n_last = np.where(fraud, rng.poisson(5.0, n), rng.poisson(2.5, n))
    online = rng.random(n) < np.where(fraud, 0.7, 0.3)
    foreign = rng.random(n) < np.where(fraud, 0.25, 0.04)
    return pd.DataFrame({
        "amount": np.round(amount, 2), "hour": hour, "distance_km": distance,
        "merchant_risk": risk, "n_last_24h": n_last.astype(np.int64),
        "online": online.astype(np.int8), "foreign": foreign.astype(np.int8),
        "is_fraud": fraud.astype(np.int8)}, index=pd.RangeIndex(start, stop))


def make_transactions(n_samples=100_000, *, fraud_rate=0.002, chunks=100_000,
                      random_state=0):
    """Synthetic card transactions with rare fraud, as a lazy dask DataFrame.

    A benchmark for imbalanced classification: every row is a transaction, fraudulent
    (``is_fraud == 1``) with probability ``fraud_rate``, independently.  The features of
    a fraudulent transaction are drawn from other distributions than a legitimate one's,
    overlapping enough that no feature gives fraud away alone:

    ============= ======= ============================================ ==================
    column        dtype   legitimate                                   fraudulent
    ============= ======= ============================================ ==================
    amount        float64 lognormal(3.4, 1.0) (median ~30), cents      lognormal(4.2, 1.3)
    hour          float64 N(14, 4) mod 24 (daytime)                    half of them N(2.5,
                                                                       2.5) mod 24 (night)
    distance_km   float64 exponential, mean 12                         half: mean 150
    merchant_risk float64 beta(2, 8)                                   beta(3, 5)
    n_last_24h    int64   Poisson(2.5): the card's recent transactions Poisson(5)
    online        int8    1 with probability 0.3                       0.7
    foreign       int8    1 with probability 0.04                      0.25
    is_fraud      int8    0                                            1
    ============= ======= ============================================ ==================

    ``hour`` is cyclic and ``amount`` and ``distance_km`` are heavy-tailed: a linear
    model does better on features made from them (``log1p``, sine and cosine of the
    hour), as it would on real data.

    Parameters
    ----------
    n_samples : int >= 1
        Transactions (rows).
    fraud_rate : float in [0, 1]
        Probability that a transaction is fraudulent; the observed rate is binomial
        around it (standard deviation ``sqrt(fraud_rate * (1 - fraud_rate) /
        n_samples)``).
    chunks : int >= 1
        Rows per partition (the last one may be shorter).
    random_state : None, int >= 0, numpy Generator or RandomState
        Seed. Partition i is drawn from ``np.random.default_rng([seed, i])`` alone, so a
        partition is the same whichever scheduler computes it, whether or not the others
        are computed, and a lost partition is regenerated identically.  None (or a
        generator) draws one seed at call time; the collection is still the same data
        each time it is computed.

    Returns
    -------
    df : dask.dataframe.DataFrame
        ``ceil(n_samples / chunks)`` partitions with the columns above; the index is the
        row number (int64, 0 to n_samples - 1) with known divisions.

    Examples
    --------
    >>> from dmlkit.datasets import make_transactions
    >>> df = make_transactions(10_000, fraud_rate=0.01, chunks=5_000, random_state=0)
    >>> df.npartitions, list(df.columns)[-1]
    (2, 'is_fraud')
    """
    import dask.dataframe as dd
    import pandas as pd

    n_samples = _check_int("n_samples", n_samples)
    chunks = _check_int("chunks", chunks)
    if (isinstance(fraud_rate, bool) or not isinstance(fraud_rate, numbers.Real)
            or not 0 <= fraud_rate <= 1):
        raise ValueError(f"fraud_rate must be a number between 0 and 1, got {fraud_rate!r}.")
    seed = _seed_of(random_state)
    bounds = list(range(0, n_samples, chunks)) + [n_samples]
    parts = [(i, start, stop)
             for i, (start, stop) in enumerate(zip(bounds[:-1], bounds[1:], strict=True))]
    meta = pd.DataFrame({c: np.empty(0, dtype=t) for c, t in _TRANSACTION_COLUMNS.items()},
                        index=pd.RangeIndex(0))
    return dd.from_map(_transactions_partition, parts, meta=meta,
                       divisions=(*bounds[:-1], n_samples - 1), label="make-transactions",
                       seed=seed, fraud_rate=float(fraud_rate))


# --------------------------------------------------------------------------------------
# Synthetic documents from planted topics
# --------------------------------------------------------------------------------------

_CONSONANTS = np.array(list("bdfgklmnprstvz"))
_VOWELS = np.array(list("aeiou"))


@functools.lru_cache(maxsize=4)
def _topic_model(seed, n_topics, n_words, words_per_topic):
    """The vocabulary (pseudo-words of 2 to 4 consonant-vowel syllables, distinct), the
    background word weights (Zipf, in a random order) and each topic's word ids."""
    rng = np.random.default_rng([seed, _FACTOR_STREAM, 3])
    n_syllables = _CONSONANTS.size * _VOWELS.size
    syllables = np.char.add(np.repeat(_CONSONANTS, _VOWELS.size), np.tile(_VOWELS,
                                                                          _CONSONANTS.size))
    sizes = [n_syllables ** k for k in (2, 3, 4)]
    codes = np.sort(rng.choice(sum(sizes), n_words, replace=False))
    words = []
    for code in codes.tolist():
        length = 2
        for size in sizes:
            if code < size:
                break
            code -= size
            length += 1
        parts = []
        for _ in range(length):
            code, s = divmod(code, n_syllables)
            parts.append(syllables[s])
        words.append("".join(parts))
    vocabulary = np.array(rng.permutation(words))
    background = 1.0 / np.arange(1, n_words + 1)
    background /= background.sum()
    topics = rng.permutation(n_words)[:n_topics * words_per_topic]
    topics = topics.reshape(n_topics, words_per_topic)
    for a in (vocabulary, background, topics):
        a.flags.writeable = False
    return vocabulary, background, topics


def _documents_partition(part, *, seed, n_topics, n_words, words_per_topic, doc_length,
                         topic_share):
    import pandas as pd

    index, start, stop = part
    n = stop - start
    rng = np.random.default_rng([seed, index])
    vocabulary, background, topics = _topic_model(seed, n_topics, n_words, words_per_topic)
    label = rng.integers(0, n_topics, n)
    lengths = 1 + rng.poisson(doc_length - 1, n)
    doc = np.repeat(np.arange(n), lengths)
    from_topic = rng.random(doc.size) < topic_share
    # topic words: the topic's own Zipf law over its words
    rank_w = 1.0 / np.arange(1, words_per_topic + 1)
    topic_pick = np.searchsorted(np.cumsum(rank_w) / rank_w.sum(), rng.random(doc.size),
                                 side="right").clip(max=words_per_topic - 1)
    background_pick = np.searchsorted(np.cumsum(background), rng.random(doc.size),
                                      side="right").clip(max=n_words - 1)
    word = np.where(from_topic, topics[label[doc], topic_pick], background_pick)
    tokens = vocabulary[word].tolist()
    ends = np.cumsum(lengths).tolist()
    text = [" ".join(tokens[e - k:e]) for e, k in zip(ends, lengths.tolist(), strict=True)]
    return pd.DataFrame({"text": pd.array(text, dtype="string"), "topic": label},
                        index=pd.RangeIndex(start, stop))


def make_documents(n_samples=10_000, *, n_topics=4, n_words=2_000, words_per_topic=50,
                   doc_length=30, topic_share=0.15, chunks=100_000, random_state=0,
                   return_topics=False):
    """Synthetic text documents from planted topics, as a lazy dask DataFrame.

    A benchmark for text classification and clustering that needs no download.  The
    vocabulary is ``n_words`` distinct pseudo-words (2 to 4 syllables such as "kadomi"),
    drawn from the seed; every topic owns ``words_per_topic`` of them (the topics' words
    are disjoint).  A document has one topic, uniform over the ``n_topics``, and
    ``1 + Poisson(doc_length - 1)`` words; each word is, independently, with probability
    ``topic_share`` one of its topic's words (Zipf law over them: the topic's first word
    is the most frequent), and otherwise a background word (Zipf law over the whole
    vocabulary, the same for every topic: the "stop words" and common words that tell
    nothing).

    Parameters
    ----------
    n_samples : int >= 1
        Documents (rows).
    n_topics : int >= 1
    n_words : int >= n_topics * words_per_topic
        Size of the vocabulary.
    words_per_topic : int >= 1
    doc_length : int >= 1
        Mean number of words in a document.
    topic_share : float in [0, 1]
        Probability that a word comes from the document's topic: 0 makes the topic
        impossible to tell from the text, 1 makes it easy.
    chunks : int >= 1
        Documents per partition (the last one may be shorter).
    random_state : None, int >= 0, numpy Generator or RandomState
        Seed.  The vocabulary and the topics come from the seed alone; partition i's
        documents from ``np.random.default_rng([seed, i])`` alone, so a partition is the
        same whichever scheduler computes it and a lost one is regenerated identically.
        None (or a generator) draws one seed at call time; the collection is still the
        same data each time it is computed.
    return_topics : bool
        Also return the topics' words.

    Returns
    -------
    df : dask.dataframe.DataFrame
        ``ceil(n_samples / chunks)`` partitions with columns ``text`` (string: words
        separated by single spaces) and ``topic`` (int64, 0 to n_topics - 1); the index is
        the row number with known divisions.
    topic_words : ndarray of str, shape (n_topics, words_per_topic), only with
        ``return_topics=True``
        Row t: topic t's words, the most frequent first.

    Examples
    --------
    >>> from dmlkit.datasets import make_documents
    >>> df, words = make_documents(1_000, n_topics=3, random_state=0, return_topics=True)
    >>> df.npartitions, words.shape
    (1, (3, 50))
    """
    import dask.dataframe as dd
    import pandas as pd

    n_samples = _check_int("n_samples", n_samples)
    n_topics = _check_int("n_topics", n_topics)
    words_per_topic = _check_int("words_per_topic", words_per_topic)
    n_words = _check_int("n_words", n_words, minimum=n_topics * words_per_topic)
    doc_length = _check_int("doc_length", doc_length)
    chunks = _check_int("chunks", chunks)
    if (isinstance(topic_share, bool) or not isinstance(topic_share, numbers.Real)
            or not 0 <= topic_share <= 1):
        raise ValueError(f"topic_share must be a number between 0 and 1, got "
                         f"{topic_share!r}.")
    return_topics = _check_bool("return_topics", return_topics)
    seed = _seed_of(random_state)
    bounds = list(range(0, n_samples, chunks)) + [n_samples]
    parts = [(i, start, stop)
             for i, (start, stop) in enumerate(zip(bounds[:-1], bounds[1:], strict=True))]
    meta = pd.DataFrame({"text": pd.array([], dtype="string"),
                         "topic": np.empty(0, np.int64)}, index=pd.RangeIndex(0))
    df = dd.from_map(_documents_partition, parts, meta=meta,
                     divisions=(*bounds[:-1], n_samples - 1), label="make-documents",
                     seed=seed, n_topics=n_topics, n_words=n_words,
                     words_per_topic=words_per_topic, doc_length=doc_length,
                     topic_share=float(topic_share))
    if not return_topics:
        return df
    vocabulary, _, topics = _topic_model(seed, n_topics, n_words, words_per_topic)
    return df, np.array(vocabulary[topics])
