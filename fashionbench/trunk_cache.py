"""The frozen trunk's activations, computed once and kept on disk.

With ``freeze=N`` every backbone layer but the last N is frozen, and frozen layers are a fixed
function of the image: Keras 3 runs a BatchNormalization layer with ``trainable=False`` in
inference mode (keras.io/guides/transfer_learning, "BatchNormalization layer"), and ResNet50
has no dropout. So the tensors that cross the freeze boundary — every output of a frozen
layer that a trainable layer reads, in a ResNet the residual branch as well as the main one —
can be computed once and the trainable tail + head trained on them alone, exactly.

``split_at_freeze`` cuts a compiled classifier into ``trunk`` (image -> boundary tensors) and
``tail`` (boundary tensors -> class probabilities). The tail *shares* its layers with the
classifier, so training the tail trains the classifier's own weights.

``TrunkCache`` stores the boundary activations under a key made of the trunk's weights, the
images, their size and the boundary, so a run with another freeze value, other weights or
other images never reads what it should not, and a second run of the same sweep reads all.

The cache may make a run faster, never wrong and never failed: every entry records a hash of
each array's bytes (with its shape and dtype), checked on every read; an entry that is
damaged (zeroed, truncated, garbage metadata), partial or orphaned is logged with its path,
removed and recomputed; staging folders left by a process that died are removed; and any I/O
error while storing (full disk, permissions, read-only folder) is logged and the run goes on
without storing.

Activations are written to the entry a batch at a time as they are computed, and read back a
batch at a time (``StoredRows``) while the tail is fitted: a run never holds them all in memory.
Only when they cannot be stored (larger than ``train.cache_max_gb``, or an I/O error) are they
computed in memory; ``train`` checks the size first and trains without the cache instead.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from fashionbench.config import EvalConfig, TrainConfig, check_cache_options
from fashionbench.data.rows import StoredRows, batched_rows, update_digest
from fashionbench.model import predict_batches
from fashionbench.processes import process_alive

log = logging.getLogger(__name__)

FORMAT_VERSION = 2  # bump when what is stored, or how it is computed, changes (2: array hashes)
META = "meta.json"
WRITER = "writer.json"  # in a staging folder: the host and process writing it
STAGING_PREFIX = ".staging-"
# A staging folder this old is abandoned even when its writer cannot be checked (another host).
STALE_STAGING_SECONDS = 6 * 3600


class DamagedEntry(Exception):
    """A cache entry that cannot be trusted; the message says what is wrong with it."""

@dataclass(frozen=True)
class FreezeSplit:
    """A classifier cut at its freeze boundary; ``tail`` shares the classifier's layers."""

    trunk: keras.Model  # preprocessed image -> boundary tensors (frozen layers only)
    tail: keras.Model  # boundary tensors -> the classifier's output
    boundary: tuple[str, ...]  # the layers whose outputs cross the boundary, in ``tail.inputs`` order


def split_at_freeze(model: keras.Model) -> tuple[FreezeSplit | None, str]:
    """Cut ``model`` where its frozen layers end; (None, why) when there is nothing to cache.

    There is nothing to cache when no layer with computation is frozen, and caching would be
    wrong when a frozen layer behaves randomly in training (dropout, noise) or when a frozen
    layer sits downstream of a trainable one.
    """
    def frozen(layer: keras.layers.Layer) -> bool:
        return isinstance(layer, keras.layers.InputLayer) or not layer.trainable

    boundary: list = []
    producers: list[str] = []
    for layer in model.layers:
        if frozen(layer):
            continue
        # model._nodes keys the calls of a layer that belong to *this* model's graph as
        # "<id(layer)>_ib-<i>" (keras.src.ops.function.make_node_key); a layer also used in
        # another model, e.g. an earlier tail, has more inbound nodes.
        for i, node in enumerate(layer._inbound_nodes):
            if f"{id(layer)}_ib-{i}" not in model._nodes:
                continue
            for tensor in node.input_tensors:
                producer = tensor._keras_history.operation
                if frozen(producer) and not any(tensor is seen for seen in boundary):
                    boundary.append(tensor)
                    producers.append(producer.name)
    if not boundary or all(isinstance(model.get_layer(name), keras.layers.InputLayer) for name in producers):
        return None, "no frozen layers before the trainable ones (freeze trains the whole backbone)"
    trunk = keras.Model(model.inputs, boundary, name="frozen_trunk")
    trainable_in_trunk = [layer.name for layer in trunk.layers if not frozen(layer)]
    if trainable_in_trunk:
        return None, f"trainable layers {trainable_in_trunk[:3]} feed the frozen ones; no clean boundary"
    random_in_trunk = [layer.name for layer in trunk.layers
                       if isinstance(layer, (keras.layers.Dropout, keras.layers.GaussianNoise,
                                             keras.layers.GaussianDropout, keras.layers.AlphaDropout))]
    if random_in_trunk:
        return None, f"frozen layers {random_in_trunk[:3]} are random in training; their outputs cannot be cached"
    tail = keras.Model(boundary, model.outputs, name="trainable_tail")
    return FreezeSplit(trunk, tail, tuple(producers)), f"boundary {list(producers)}"


def weights_fingerprint(model: keras.Model) -> str:
    """A hash of every weight of ``model`` (trainable or not: BatchNorm statistics count) and of
    the dtype it computes in (mixed_float16 activations are not float32 ones)."""
    digest = hashlib.blake2b(model.dtype_policy.name.encode(), digest_size=16)
    for variable in model.weights:
        value = np.ascontiguousarray(keras.ops.convert_to_numpy(variable))
        digest.update(f"{variable.path}:{value.dtype}:{value.shape}".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def images_fingerprint(images: np.ndarray | StoredRows) -> str:
    """A hash of an image array's bytes, dtype and shape (so of the image size too), read a
    chunk at a time."""
    digest = hashlib.blake2b(f"{images.dtype}:{images.shape}".encode(), digest_size=16)
    update_digest(digest, images)
    return digest.hexdigest()


@dataclass(frozen=True)
class CachedFeatures:
    """The boundary activations of one image set, and what getting them cost."""

    # One per boundary tensor, ``len(images)`` rows each: the entry's files, read when used (in
    # memory only when they could not be stored).
    arrays: tuple[StoredRows | np.ndarray, ...]
    hit: bool
    seconds: float  # spent here: computing (miss) or reading (hit)
    compute_seconds: float  # what computing them took when they were computed
    derived_from: list[str] | None = None  # a miss computed from this stored upstream boundary


class TrunkCache:
    """A directory of boundary activations, least recently used entries evicted past a size limit."""

    def __init__(self, directory: str | Path, max_gb: float = TrainConfig.cache_max_gb,
                 dtype: str = TrainConfig.cache_dtype, batch_size: int = EvalConfig.batch_size) -> None:
        """Raises TrunkCacheConfigError naming the ``train.cache_*`` option that is invalid; a folder
        that cannot be created is logged and the cache only computes."""
        check_cache_options(max_gb, dtype)
        self.directory = Path(directory).expanduser()
        self.max_bytes = int(max_gb * 1e9)
        self.dtype = dtype
        self.batch_size = batch_size
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as error:  # the run goes on, computing every activation
            log.warning("trunk cache: train.cache_dir=%s cannot be created (%s); continuing without a cache",
                        self.directory, error)
        self._clean_up()

    @classmethod
    def from_config(cls, train: TrainConfig, batch_size: int) -> TrunkCache:
        """The cache ``train.cache_*`` configures, predicting in batches of ``batch_size``."""
        return cls(train.cache_directory, train.cache_max_gb, train.cache_dtype, batch_size)

    def key(self, split: FreezeSplit, images: np.ndarray) -> str:
        """What the activations depend on: trunk weights, images (and their size), boundary, dtype."""
        return self._key(weights_fingerprint(split.trunk), images_fingerprint(images), split.boundary)

    def _key(self, weights: str, images: str, boundary: tuple[str, ...]) -> str:
        parts = [str(FORMAT_VERSION), weights, images, ",".join(boundary), self.dtype]
        return hashlib.blake2b("|".join(parts).encode(), digest_size=16).hexdigest()

    def activation_bytes(self, split: FreezeSplit, rows: int) -> int:
        """What the boundary activations of ``rows`` images take, stored in the cache's dtype."""
        per_row = sum(int(np.prod(tensor.shape[1:])) for tensor in split.trunk.outputs)
        return rows * per_row * np.dtype(self.dtype).itemsize

    def features(self, split: FreezeSplit, images: np.ndarray | StoredRows) -> CachedFeatures:
        """The boundary activations of ``images``: read from disk, or computed and stored.

        A miss starts from a stored boundary upstream of this one (another freeze value's,
        same images, same weights up to there) when there is one, else from the images.
        """
        start = time.perf_counter()
        weights, images_key = weights_fingerprint(split.trunk), images_fingerprint(images)
        entry = self.directory / self._key(weights, images_key, split.boundary)
        if entry.exists():
            try:
                meta, arrays = self._read(entry, expected_arrays=len(split.boundary))
            except DamagedEntry as error:
                self._discard(entry, str(error))
            else:
                _touch(entry / META)  # recently used: evicted last
                return CachedFeatures(arrays, True, time.perf_counter() - start, meta["compute_seconds"])
        meta = {"boundary": list(split.boundary), "images": int(len(images)), "images_fingerprint": images_key,
                "weights_fingerprint": weights, "image_shape": list(images.shape[1:]), "dtype": self.dtype}
        size = self.activation_bytes(split, len(images))
        if size > self.max_bytes:
            log.warning("trunk cache: %.2f GB of activations exceed train.cache_max_gb (%.2f GB); not stored, "
                        "computed in memory", size / 1e9, self.max_bytes / 1e9)
        else:
            try:
                arrays, derived_from = self._compute_into(entry, split, images, images_key, meta, start)
            except OSError as error:
                log.warning("trunk cache: could not store %s (%s); continuing without storing, the activations "
                            "computed in memory", entry, error)
            else:
                seconds = time.perf_counter() - start
                return CachedFeatures(arrays, False, seconds, seconds, derived_from)
        batches, derived_from = self._batches(split, images, images_key)
        arrays = tuple(np.concatenate(parts) for parts in zip(*batches, strict=True)) if len(images) else tuple(
            np.zeros((0, *tensor.shape[1:]), self.dtype) for tensor in split.trunk.outputs)
        seconds = time.perf_counter() - start
        return CachedFeatures(arrays, False, seconds, seconds, derived_from)

    def _batches(self, split: FreezeSplit, images: np.ndarray | StoredRows, images_key: str):
        """(batches of the boundary activations, each a list of arrays in the cache's dtype; the
        stored upstream boundary they start from, or None when they start from the images)."""
        upstream = self._upstream(split, images_key)
        if upstream is None:
            batches, derived_from = predict_batches(split.trunk, images, self.batch_size), None
        else:
            batches, derived_from = _continued(split, *upstream[1:], self.batch_size), upstream[0]
        return ([np.asarray(array, dtype=self.dtype) for array in batch] for batch in batches), derived_from

    def _compute_into(self, entry: Path, split: FreezeSplit, images: np.ndarray | StoredRows, images_key: str,
                      meta: dict, start: float) -> tuple[tuple[StoredRows, ...], list[str] | None]:
        """Compute the activations into a staging folder a batch at a time (hashing them as they
        are written), rename it into place as ``entry``; the entry's arrays and the upstream
        boundary they were derived from. Raises OSError when they cannot be written, leaving
        nothing behind."""
        staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=self.directory))
        try:
            (staging / WRITER).write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid()}))
            files = [_RowsFile(staging / f"boundary_{i}.npy", (len(images), *tensor.shape[1:]), self.dtype)
                     for i, tensor in enumerate(split.trunk.outputs)]
            batches, derived_from = self._batches(split, images, images_key)
            for batch in batches:
                for file, array in zip(files, batch, strict=True):
                    file.write(array)
            recorded = [file.close() for file in files]
            meta = {**meta, "derived_from": derived_from, "compute_seconds": time.perf_counter() - start,
                    "format": FORMAT_VERSION, "arrays": recorded}
            (staging / META).write_text(json.dumps(meta))
            try:
                staging.rename(entry)
            except OSError:
                if not (entry / META).exists():
                    raise
                # Another job stored the same entry first: same key, same activations; keep theirs.
            _touch(entry / META)
            self._evict(keep=entry)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        return tuple(StoredRows(entry / f"boundary_{i}.npy") for i in range(len(recorded))), derived_from

    def _read(self, entry: Path, expected_arrays: int | None = None) -> tuple[dict, tuple[StoredRows, ...]]:
        """An entry's metadata and arrays (read from disk when used), every array's bytes checked
        (a chunk at a time) against the hash, shape and dtype recorded when it was stored.
        Raises DamagedEntry saying what does not match."""
        try:
            meta = json.loads((entry / META).read_text())
            recorded = meta["arrays"]
            wrong_count = expected_arrays is not None and len(recorded) != expected_arrays
            if meta.get("format") != FORMAT_VERSION or wrong_count:
                raise DamagedEntry(f"format {meta.get('format')!r} with {len(recorded)} array(s), expected format "
                                   f"{FORMAT_VERSION} with {expected_arrays}")
            arrays = []
            for i, expected in enumerate(recorded):
                array = StoredRows(entry / f"boundary_{i}.npy")
                digest = hashlib.blake2b(digest_size=16)
                update_digest(digest, array)
                if [list(array.shape), str(array.dtype), digest.hexdigest()] != \
                        [expected["shape"], expected["dtype"], expected["hash"]]:
                    raise DamagedEntry(f"boundary_{i}.npy does not hold the array recorded in {META} "
                                       f"(shape {list(array.shape)}, dtype {array.dtype}, bytes hash differs)")
                arrays.append(array)
        except DamagedEntry:
            raise
        except (OSError, ValueError, KeyError, TypeError, EOFError) as error:  # missing, truncated, garbage
            raise DamagedEntry(f"{type(error).__name__}: {error}") from None
        return meta, tuple(arrays)

    def _discard(self, entry: Path, why: str) -> None:
        log.warning("trunk cache: %s is damaged (%s); removed, the activations are computed again", entry, why)
        shutil.rmtree(entry, ignore_errors=True)

    def _clean_up(self) -> None:
        """Remove staging folders whose writer is gone, and entries without metadata (orphans)."""
        try:
            children = list(self.directory.iterdir())
        except OSError:
            return
        for path in children:
            if path.name.startswith(STAGING_PREFIX):
                if _abandoned(path):
                    log.warning("trunk cache: removing %s, left by a process that is gone", path)
                    shutil.rmtree(path, ignore_errors=True)
            elif path.is_dir() and not (path / META).exists():
                self._discard(path, f"no {META}: a partial or orphaned entry")

    def _upstream(self, split: FreezeSplit, images_key: str) -> tuple | None:
        """A stored upstream boundary this one can be computed from: (its boundary, its arrays,
        the upstream tensors in this trunk, the model from them to this boundary or None when
        every boundary tensor is stored), or None.

        An entry qualifies when it holds the same images, its boundary layers are frozen
        layers of this trunk, the weights up to them hash as they did, and this boundary is
        computable from them alone (Keras refuses a disconnected graph). The nearest such
        entry (fewest layers left to run) is used.
        """
        candidates = []
        for meta_path in self.directory.glob(f"*/{META}"):
            try:
                meta = json.loads(meta_path.read_text())
            except (OSError, ValueError):  # evicted by another job, or damaged: read() removes it when asked
                continue
            if "boundary" not in meta:
                continue
            if meta.get("images_fingerprint") != images_key or meta.get("dtype") != self.dtype \
                    or tuple(meta["boundary"]) == split.boundary:
                continue
            try:
                upstream = [split.trunk.get_layer(name).output for name in meta["boundary"]]
                prefix = keras.Model(split.trunk.inputs, upstream)
                remaining = [t for t in split.trunk.outputs if not any(t is u for u in upstream)]
                rest = keras.Model(upstream, remaining) if remaining else None
            except ValueError:  # not a layer of this trunk, or downstream of this boundary
                continue
            if weights_fingerprint(prefix) == meta["weights_fingerprint"]:
                candidates.append((len(rest.layers) if rest else 0, meta_path.parent, meta, upstream, rest))
        if not candidates:
            return None
        _, entry, meta, upstream, rest = min(candidates, key=lambda c: c[0])
        try:
            _, stored = self._read(entry)
        except DamagedEntry as error:
            self._discard(entry, str(error))
            return None
        return meta["boundary"], stored, upstream, rest

    def _evict(self, keep: Path) -> None:
        entries = [p for p in self.directory.iterdir() if (p / META).is_file()]
        sizes = {p: sum(f.stat().st_size for f in p.iterdir()) for p in entries}
        total = sum(sizes.values())
        for entry in sorted(entries, key=lambda p: (p / META).stat().st_mtime):
            if total <= self.max_bytes:
                break
            if entry != keep:
                shutil.rmtree(entry, ignore_errors=True)
                total -= sizes[entry]
                log.info("trunk cache: evicted %s (%.1f MB) to stay under train.cache_max_gb", entry.name,
                         sizes[entry] / 1e6)

    def size_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.directory.rglob("*.npy"))


def _continued(split: FreezeSplit, stored: tuple[StoredRows, ...], upstream: list, rest: keras.Model | None,
               batch_size: int):
    """Batches of ``split``'s boundary activations computed from stored upstream ones, a batch at
    a time: the tensors both boundaries share are passed through, ``rest`` computes the others."""
    forward = tf.function(rest, reduce_retracing=True) if rest is not None else None
    for batch in batched_rows(stored, batch_size):
        outputs = forward(list(batch), training=False) if forward is not None else []
        computed = iter(outputs if isinstance(outputs, (list, tuple)) else [outputs])
        arrays = []
        for tensor in split.trunk.outputs:
            passed = [i for i, u in enumerate(upstream) if u is tensor]
            arrays.append(np.asarray(batch[passed[0]] if passed else next(computed)))
        yield arrays


class _RowsFile:
    """A ``.npy`` file written a batch of rows at a time, its bytes hashed as they are written
    (the hash of the whole array's bytes, as ``_read`` checks it)."""

    def __init__(self, path: Path, shape: tuple[int, ...], dtype: str) -> None:
        self.path, self.shape, self.dtype = path, tuple(int(n) for n in shape), np.dtype(dtype)
        self.rows = 0
        self.digest = hashlib.blake2b(digest_size=16)
        self.file = open(path, "wb")  # closed by close(), after the last batch
        np.lib.format.write_array_header_1_0(self.file, {
            "descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": self.shape})

    def write(self, rows: np.ndarray) -> None:
        data = np.ascontiguousarray(rows, dtype=self.dtype).tobytes()
        self.digest.update(data)
        self.file.write(data)
        self.rows += len(rows)

    def close(self) -> dict:
        """Close the file; its record in the entry's metadata (shape, dtype, hash)."""
        self.file.close()
        if self.rows != self.shape[0]:
            raise OSError(f"{self.path}: {self.rows} rows written, {self.shape[0]} expected")
        return {"shape": list(self.shape), "dtype": str(self.dtype), "hash": self.digest.hexdigest()}


def _touch(path: Path) -> None:
    """Mark an entry used now. The time is given explicitly: the file system's own "now" is
    coarse (a few ms), which would tie with an entry written just before."""
    now = time.time_ns()
    try:
        os.utime(path, ns=(now, now))
    except OSError:  # a read-only cache still serves its entries
        pass


def _abandoned(staging: Path) -> bool:
    """A staging folder whose writer (host and pid in its writer.json) is no longer running; one
    of another host, or without a readable writer.json, once it is older than a few hours."""
    try:
        age = time.time() - staging.stat().st_mtime
    except OSError:
        return False  # already gone
    try:
        writer = json.loads((staging / WRITER).read_text())
        host, pid = writer["host"], int(writer["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return age > STALE_STAGING_SECONDS
    if host != socket.gethostname():
        return age > STALE_STAGING_SECONDS
    return not process_alive(pid)
