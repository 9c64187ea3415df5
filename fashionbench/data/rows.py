"""Arrays kept on disk and read a batch of rows at a time: the catalogue store's images and
the trunk cache's activations, so no stage holds a whole catalogue in memory.

A ``.npy`` file keeps its rows one after another behind a short header: row i of an array of
shape (n, *row) starts at ``offset + i * row_bytes``. ``StoredRows`` parses the header with
``np.load(mmap_mode="r")`` (the files are memory-mappable as they are) but reads the rows a
batch needs with positional reads (``os.pread``), not through the mapping: pages of a mapping
that a pass has touched count in the process's resident memory (RSS) until it ends, pages read
through the file system's cache do not. Measured on a 393 MB file of 128 px images read in
batches of 32: peak RSS grew 378 MB through the map, 3 MB with positional reads.

``batched_rows`` turns rows (on disk or in memory) into a ``tf.data`` pipeline that visits
them in exactly the order ``tf.data.Dataset.from_tensor_slices(...).shuffle(n, seed)`` would:
tf.data's shuffle order depends only on the seed and the number of elements, so shuffling the
row numbers and reading each batch's rows gives the same batches with only a batch in memory.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

# About this many bytes per read when a whole array is hashed or iterated (at least one row).
CHUNK_BYTES = 8 * 2**20


class _OpenFile:
    """A file descriptor closed when the last ``StoredRows`` reading it is gone. Opened once, at
    construction: a reader keeps reading a file that is removed meanwhile (an evicted entry)."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_RDONLY)

    def __del__(self) -> None:
        os.close(self.fd)


class StoredRows:
    """Rows of a C-ordered ``.npy`` array on disk (all of them, or those at ``positions``),
    indexed like an array: ``rows[i]``, ``rows[a:b]``, ``rows[mask]`` and ``rows[[i, j]]`` read
    just those rows; ``subset`` selects rows without reading; ``np.asarray(rows)`` reads all.

    Raises OSError if the file cannot be opened and ValueError if it is not such an array.
    """

    def __init__(self, path: str | Path, positions: np.ndarray | None = None, *, _file: _OpenFile | None = None
                 ) -> None:
        self.path = Path(path)
        header = np.load(self.path, mmap_mode="r", allow_pickle=False)  # reads the header only
        if header.ndim < 1 or not header.flags.c_contiguous:
            raise ValueError(f"{self.path}: expected a C-ordered array with rows, got shape {header.shape}")
        self.dtype = header.dtype
        self.row_shape = tuple(header.shape[1:])
        self.offset = int(header.offset)
        self.row_bytes = int(np.prod(self.row_shape, dtype=np.int64)) * self.dtype.itemsize
        self.positions = np.arange(header.shape[0]) if positions is None else np.asarray(positions, dtype=np.int64)
        del header
        self._file = _file or _OpenFile(self.path)

    def __len__(self) -> int:
        return len(self.positions)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self), *self.row_shape)

    @property
    def ndim(self) -> int:
        return 1 + len(self.row_shape)

    @property
    def nbytes(self) -> int:
        return len(self) * self.row_bytes

    def subset(self, selector) -> StoredRows:
        """The rows ``selector`` picks (a mask, slice or positions), nothing read yet."""
        return StoredRows(self.path, self.positions[selector], _file=self._file)

    def __getitem__(self, key):
        if isinstance(key, tuple):  # rows first, then the rest within the rows read
            rows = self[key[0]]
            return rows[(slice(None), *key[1:])] if rows.ndim == self.ndim else rows[key[1:]]
        if isinstance(key, (int, np.integer)):
            return self._read(self.positions[[key]])[0]
        return self._read(self.positions[key])

    def __iter__(self) -> Iterator[np.ndarray]:
        for block in row_chunks(self):
            yield from block

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        rows = self[:]
        return rows if dtype is None else rows.astype(dtype)

    def _read(self, file_rows: np.ndarray) -> np.ndarray:
        """The rows at these file positions, in this order; neighbouring rows in one read each."""
        out = np.empty((len(file_rows), *self.row_shape), dtype=self.dtype)
        if not len(file_rows):
            return out
        flat = out.reshape(len(file_rows), -1).view(np.uint8)
        breaks = np.flatnonzero(np.diff(file_rows) != 1) + 1
        for first, stop in zip(np.r_[0, breaks], np.r_[breaks, len(file_rows)]):
            size = (stop - first) * self.row_bytes
            data = os.pread(self._file.fd, size, self.offset + int(file_rows[first]) * self.row_bytes)
            if len(data) != size:
                raise OSError(f"{self.path}: truncated ({len(data)} of {size} bytes at row {file_rows[first]})")
            flat[first:stop] = np.frombuffer(data, dtype=np.uint8).reshape(stop - first, -1)
        return out

    def __getstate__(self) -> dict:  # a file descriptor does not travel to another process
        return {"path": self.path, "positions": self.positions}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"], state["positions"])


def select_rows(rows: np.ndarray | StoredRows, selector) -> np.ndarray | StoredRows:
    """``rows[selector]``, without reading anything when the rows are on disk."""
    return rows.subset(selector) if isinstance(rows, StoredRows) else rows[selector]


def row_chunks(rows: np.ndarray | StoredRows) -> Iterator[np.ndarray]:
    """Consecutive blocks of rows (about CHUNK_BYTES each), C-contiguous, in memory one at a time."""
    row_bytes = max(1, rows.nbytes // max(1, len(rows)))
    chunk = max(1, CHUNK_BYTES // row_bytes)
    for start in range(0, len(rows), chunk):
        yield np.ascontiguousarray(rows[start:start + chunk])


def update_digest(digest, rows: np.ndarray | StoredRows) -> None:
    """Feed the rows' bytes to a hashlib digest, a chunk at a time: the same digest as
    ``digest.update(np.ascontiguousarray(rows).tobytes())`` without the whole copy."""
    for block in row_chunks(rows):
        digest.update(block)  # a C-contiguous array is a buffer: hashed without a copy


def batched_rows(arrays: tuple[np.ndarray | StoredRows, ...], batch_size: int, shuffle_seed: int | None = None):
    """A ``tf.data`` dataset of tuples of batches, row i of every array together, each batch read
    when the pipeline asks for it (several at once, kept in order); shuffled as
    ``from_tensor_slices(arrays).shuffle(len, seed=shuffle_seed, reshuffle_each_iteration=True)``
    would be. Callers map their preprocessing over it and prefetch."""
    import tensorflow as tf

    count = len(arrays[0])
    order = tf.data.Dataset.range(count)
    if shuffle_seed is not None:
        order = order.shuffle(count, seed=shuffle_seed, reshuffle_each_iteration=True)
    dtypes = [tf.as_dtype(array.dtype) for array in arrays]
    shapes = [(None, *array.shape[1:]) for array in arrays]

    def read(positions: np.ndarray) -> list[np.ndarray]:
        return [np.asarray(array[positions]) for array in arrays]

    def read_batch(positions):
        batch = tf.numpy_function(read, [positions], dtypes, stateful=False)
        for tensor, shape in zip(batch, shapes):
            tensor.set_shape(shape)
        return tuple(batch)

    return order.batch(batch_size).map(read_batch, num_parallel_calls=tf.data.AUTOTUNE)
