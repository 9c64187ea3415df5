"""Arrays kept on disk and read a batch of rows at a time: the catalogue store's images and
the trunk cache's activations, so no stage holds a whole catalogue in memory.

A ``.npy`` file keeps its rows one after another behind a short header: row i of an array of
shape (n, *row) starts at ``offset + i * row_bytes``. ``StoredRows`` parses the header with
``numpy.lib.format`` (the files are memory-mappable as they are) but reads the rows a batch
needs with positional reads (``os.pread``), not through a memory map: pages of a mapping
that a pass has touched count in the process's resident memory (RSS) until it ends, pages read
through the file system's cache do not. Measured on a 393 MB file of 128 px images read in
batches of 32: peak RSS grew 378 MB through the map, 3 MB with positional reads.

``batched_rows`` turns rows (on disk or in memory) into a ``tf.data`` pipeline that visits
them in exactly the order ``tf.data.Dataset.from_tensor_slices(...).shuffle(n, seed)`` would:
tf.data's shuffle order depends only on the seed and the number of elements, so shuffling the
row numbers and reading each batch's rows gives the same batches with only a batch in memory.

``RowsWriter`` is the other direction: a data source's images, decoded one by one, go straight
into such a file (the catalogue store's, or a nameless temporary one), so not even the first
load of a data set holds its images in memory; ``RowsInMemory`` keeps them in a list instead.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

# About this many bytes per read when a whole array is hashed or iterated (at least one row).
CHUNK_BYTES = 8 * 2**20


class _OpenFile:
    """A file descriptor closed when the last ``StoredRows`` reading it is gone. Opened once, at
    construction: a reader keeps reading a file that is removed meanwhile (an evicted entry, or
    an anonymous temporary file that never had a name)."""

    def __init__(self, path: Path | None = None, *, fd: int | None = None) -> None:
        self.fd = -1  # until opened: a file that cannot be opened leaves nothing to close
        self.fd = os.open(path, os.O_RDONLY) if fd is None else fd

    def __del__(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)


def _read_header(fd: int, path: Path) -> tuple[np.dtype, tuple[int, ...], int, int]:
    """(dtype, row shape, offset of row 0, number of rows) of the ``.npy`` file open as ``fd``."""
    with open(os.dup(fd), "rb") as file:  # a second descriptor: seeking it moves no one else's reads
        file.seek(0)
        try:
            version = np.lib.format.read_magic(file)
            shape, fortran_order, dtype = (np.lib.format.read_array_header_1_0(file) if version == (1, 0)
                                           else np.lib.format.read_array_header_2_0(file))
        except ValueError as error:
            raise ValueError(f"{path}: not a .npy array ({error})") from None
        offset = file.tell()
    if len(shape) < 1 or (fortran_order and len(shape) > 1) or dtype.hasobject:
        raise ValueError(f"{path}: expected a C-ordered array of plain values with rows, got shape {shape}")
    return dtype, tuple(shape[1:]), offset, shape[0]


class StoredRows:
    """Rows of a C-ordered ``.npy`` array on disk (all of them, or those at ``positions``),
    indexed like an array: ``rows[i]``, ``rows[a:b]``, ``rows[mask]`` and ``rows[[i, j]]`` read
    just those rows; ``subset`` selects rows without reading; ``np.asarray(rows)`` reads all.

    Raises OSError if the file cannot be opened and ValueError if it is not such an array.
    """

    def __init__(self, path: str | Path, positions: np.ndarray | None = None, *, _file: _OpenFile | None = None
                 ) -> None:
        self.path = Path(path)
        self._file = _file or _OpenFile(self.path)
        self.dtype, self.row_shape, self.offset, count = _read_header(self._file.fd, self.path)
        self.row_bytes = int(np.prod(self.row_shape, dtype=np.int64)) * self.dtype.itemsize
        self.positions = np.arange(count) if positions is None else np.asarray(positions, dtype=np.int64)

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

    def __getstate__(self) -> dict:  # a file descriptor does not travel to another process: the path does
        if not self.path.is_file():
            raise pickle.PicklingError(f"{self.path}: rows of an anonymous or removed file cannot be sent to "
                                       "another process")
        return {"path": self.path, "positions": self.positions}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"], state["positions"])


class RowsInMemory:
    """Where a data source puts its images when nothing is stored: a list, stacked at the end."""

    def __init__(self, row_shape: tuple[int, ...], dtype=np.uint8) -> None:
        self.row_shape, self.dtype, self.rows = tuple(row_shape), np.dtype(dtype), []

    def append(self, row: np.ndarray) -> None:
        self.rows.append(_checked(row, self.row_shape, self.dtype))

    def finish(self) -> np.ndarray:
        return np.stack(self.rows) if self.rows else np.zeros((0, *self.row_shape), self.dtype)


class RowsWriter:
    """A ``.npy`` file written a row at a time (through a buffer of about CHUNK_BYTES) when the
    number of rows is only known at the end, e.g. a data source's images as they are decoded:
    nothing but the buffer is held in memory. The header is written first with room for any
    count and rewritten by ``finish`` with the real one (padded with spaces to the same length,
    as the format allows), so the rows are never copied.

    ``RowsWriter(path, ...)`` writes the file ``path``; ``RowsWriter.anonymous(folder, ...)``
    writes a temporary file that has no name (it is gone when the last reader closes it, also
    after a crash). ``finish()`` returns the rows as ``StoredRows``. Raises OSError when the
    file cannot be written.
    """

    def __init__(self, path: str | Path, row_shape: tuple[int, ...], dtype=np.uint8, *, _fd: int | None = None
                 ) -> None:
        self.path, self.row_shape, self.dtype = Path(path), tuple(row_shape), np.dtype(dtype)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644) if _fd is None else _fd
        self.header_bytes = len(_npy_header((2**63 - 1, *self.row_shape), self.dtype))
        os.pwrite(self.fd, _npy_header((0, *self.row_shape), self.dtype, self.header_bytes), 0)
        self.row_bytes = int(np.prod(self.row_shape, dtype=np.int64)) * self.dtype.itemsize
        self.buffer = np.empty((max(1, CHUNK_BYTES // max(1, self.row_bytes)), *self.row_shape), self.dtype)
        self.count, self.buffered = 0, 0  # rows written to the file, rows in the buffer

    @classmethod
    def anonymous(cls, folder: str | Path | None, row_shape: tuple[int, ...], dtype=np.uint8) -> RowsWriter:
        file = tempfile.TemporaryFile(dir=folder)  # no name on Linux (O_TMPFILE), else unlinked at once
        fd = os.dup(file.fileno())
        file.close()
        return cls(Path(folder or tempfile.gettempdir()) / "(temporary file)", row_shape, dtype, _fd=fd)

    def append(self, row: np.ndarray) -> None:
        self.buffer[self.buffered] = _checked(row, self.row_shape, self.dtype)
        self.buffered += 1
        if self.buffered == len(self.buffer):
            self._flush()

    def _flush(self) -> None:
        data = memoryview(self.buffer[:self.buffered].reshape(-1).view(np.uint8))
        position = self.header_bytes + self.count * self.row_bytes
        while data:
            written = os.pwrite(self.fd, data, position)
            data, position = data[written:], position + written
        self.count, self.buffered = self.count + self.buffered, 0

    def finish(self) -> StoredRows:
        """The rows written, on disk; the writer is closed."""
        self._flush()
        os.pwrite(self.fd, _npy_header((self.count, *self.row_shape), self.dtype, self.header_bytes), 0)
        fd, self.fd, self.buffer = self.fd, -1, None
        return StoredRows(self.path, _file=_OpenFile(fd=fd))

    def close(self) -> None:
        """Close without finishing (on an error); a named file is left for its owner to remove."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd, self.buffer = -1, None


def _npy_header(shape: tuple[int, ...], dtype: np.dtype, length: int | None = None) -> bytes:
    """A version 1.0 ``.npy`` header for a C-ordered array, padded with spaces to ``length``
    bytes (a multiple of 64) or to the next multiple of 64."""
    text = repr({"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": tuple(shape)})
    minimum = len(np.lib.format.MAGIC_PREFIX) + 2 + 2 + len(text) + 1  # magic, version, length, text, newline
    length = length or -(-minimum // 64) * 64
    if minimum > length:
        raise ValueError(f"an .npy header for shape {shape} needs {minimum} bytes, {length} reserved")
    text = text + " " * (length - minimum) + "\n"
    return np.lib.format.magic(1, 0) + len(text).to_bytes(2, "little") + text.encode("latin1")


def _checked(row: np.ndarray, row_shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    row = np.asarray(row)
    if row.shape != row_shape or row.dtype != dtype:
        raise ValueError(f"a row of {row.dtype} {row.shape}, expected {dtype} {row_shape}")
    return row


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
