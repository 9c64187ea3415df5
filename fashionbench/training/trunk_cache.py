"""The frozen trunk's activations, computed once and kept on disk.

With ``freeze=N`` every backbone layer but the last N is frozen, and frozen layers are a fixed
function of the image: Keras 3 runs a BatchNormalization layer with ``trainable=False`` in
inference mode (keras.io/guides/transfer_learning, "BatchNormalization layer"), and ResNet50
has no dropout. So the tensors that cross the freeze boundary — every output of a frozen
layer that a trainable layer reads, in a ResNet the residual branch as well as the main one —
can be computed once and the trainable tail + head trained on them alone, exactly.

``model.freeze_split.split_at_freeze`` cuts a compiled classifier into ``trunk`` (image ->
boundary tensors) and ``tail`` (boundary tensors -> class probabilities). The tail *shares* its
layers with the classifier, so training the tail trains the classifier's own weights.

``TrunkCache`` stores the boundary activations under a key made of the trunk's weights, the
images, their size and the boundary, so a run with another freeze value, other weights or
other images never reads what it should not, and a second run of the same sweep reads all.

Parallel jobs of a sweep share one cache: each entry has a lock (``runtime.locks.FileLock``), so
that of several jobs needing the same entry one computes it and the others wait, then read;
readers hold it shared, and eviction passes over entries and staging folders in use. A job that
dies releases its lock with it. A miss without a stored upstream boundary first stores the
block its boundary cuts (``TrunkCache.features``), so the freeze values of a sweep start from one
another in any order, and parallel jobs with different freeze values run the images once.

The cache may make a run faster, never wrong and never failed: every entry records a hash of
each array's bytes (with its shape and dtype), checked on every read; an entry that is
damaged (zeroed, truncated, garbage metadata), partial or orphaned is logged with its path,
removed and recomputed; staging folders left by a process that died are removed; and any I/O
error while storing (full disk, permissions, read-only folder) is logged and the run goes on
without storing.

Activations are written to the entry's staging folder a batch at a time as they are computed
(hashed as they are written), and read back a batch at a time (``StoredRows``) while the tail is
fitted: a run never holds them all in memory. Only when they cannot be stored (larger than
``train.cache_max_gb``, or an I/O error) are they computed in memory; ``train`` checks the size
first and trains without the cache instead. A ``StoredRows`` keeps its file open, so rows read
after the entry is evicted are still the stored ones.

Beside the activations, an entry may hold the record of a classifier's build
(``store_entry``, ``read_entry``), with which a later run builds the tail alone
(``training.trunk_free``); such entries are locked, staged and evicted as the others.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import keras
import numpy as np

from fashionbench.data.rows import StoredRows, update_digest
from fashionbench.model.classifier import predict_batches
from fashionbench.model.freeze_split import FreezeSplit, dominating_tensor
from fashionbench.model.schema import PREDICTION_BATCH_SIZE
from fashionbench.runtime.locks import FileLock
from fashionbench.runtime.processes import process_alive
from fashionbench.training.schema import TrainConfig, check_cache_options

log = logging.getLogger(__name__)

# Bump when what is stored, or how it is computed, changes (2: array hashes, 3: SHA-256, 4: the
# weights fingerprint names the dtype policy).
FORMAT_VERSION = 4
META = "meta.json"
WRITER = "writer.json"  # in a staging folder: the host and process writing it
STAGING_PREFIX = ".staging-"  # then the entry's key
LOCKS = ".locks"  # one lock file per entry (FileLock)
# A staging folder this old is abandoned even when its writer cannot be checked (another host).
STALE_STAGING_SECONDS = 6 * 3600


T = TypeVar("T")
_ENTRY_NAME = re.compile(r"[0-9a-f]{32}")  # an entry's folder: its key


class DamagedEntry(Exception):
    """A cache entry that cannot be trusted; the message says what is wrong with it."""

def weights_fingerprint(model: keras.Model, digests: dict[int, str] | None = None) -> str:
    """A hash of every weight of ``model`` (trainable or not: BatchNorm statistics count) and of
    the dtype policy it computes in (mixed_float16 activations are not float32 ones).

    ``digests`` memoises each variable's hash (by ``id``) for models that share layers, as a
    trunk and the prefixes of it that a derivation checks do. SHA-256: about 2.5x faster than
    BLAKE2b on CPUs with SHA extensions (0.20 s against 0.50 s for ResNet50's 94 MB here)."""
    digests = {} if digests is None else digests
    digest = hashlib.sha256(f"{model.dtype_policy.name}|".encode())
    for variable in model.weights:
        if id(variable) not in digests:
            value = np.ascontiguousarray(keras.ops.convert_to_numpy(variable))
            digests[id(variable)] = f"{value.dtype}:{value.shape}:{_array_hash(value)}"
        digest.update(f"{variable.path}:{digests[id(variable)]}".encode())
    return digest.hexdigest()[:32]


def images_fingerprint(images: np.ndarray | StoredRows) -> str:
    """A hash of an image array's bytes, dtype and shape (so of the image size too), read a
    chunk at a time."""
    return _array_hash(images, prefix=f"{images.dtype}:{images.shape}")


@dataclass(frozen=True)
class CachedFeatures:
    """The boundary activations of one image set, and what getting them cost.

    A hit keeps its entry's shared lock (``lease``) until ``release()``, so that no other job
    evicts the files while they are read. A miss holds no lock: its ``StoredRows`` keep the
    files they read open, so an eviction cannot take them away."""

    # One per boundary tensor, ``len(images)`` rows each: the entry's files, read when used (in
    # memory only when they could not be stored).
    arrays: tuple[StoredRows | np.ndarray, ...]
    hit: bool
    seconds: float  # spent here: computing (miss) or reading (hit)
    compute_seconds: float  # what computing them took when they were computed
    derived_from: list[str] | None = None  # a miss computed from this stored upstream boundary
    lease: FileLock | None = field(default=None, repr=False, compare=False)

    @property
    def stored(self) -> bool:
        """Whether the activations are the cache's files (not computed into memory only)."""
        return all(isinstance(array, StoredRows) for array in self.arrays)

    def release(self) -> None:
        """Let other jobs evict the entry again."""
        if self.lease is not None:
            self.lease.release()


@dataclass(frozen=True)
class _Entry:
    """Where the activations of one (trunk, images) pair live."""

    path: Path
    boundary: tuple[str, ...]
    weights: str  # the trunk's weights_fingerprint


@dataclass(frozen=True)
class _Upstream:
    """Stored activations a trunk can start from: ``rest`` maps ``tensors`` to the trunk's outputs."""

    tensors: list  # the trunk's tensors that ``arrays`` hold, in order
    rest: keras.Model | None  # None when the stored tensors are all the trunk's outputs
    arrays: tuple[StoredRows | np.ndarray, ...]


class TrunkCache:
    """A directory of boundary activations, least recently used entries evicted past a size limit.

    Safe for parallel jobs on one cache (processes of one machine, or of several where the file
    system has working ``flock``): a job computes an entry under its exclusive lock and the others
    wait for it, then read; a job reads under a shared lock, and eviction skips locked entries.
    """

    def __init__(self, directory: str | Path, max_gb: float = TrainConfig.cache_max_gb,
                 dtype: str = TrainConfig.cache_dtype, batch_size: int = PREDICTION_BATCH_SIZE) -> None:
        """Raises TrunkCacheConfigError naming the ``train.cache_*`` option that is invalid; a folder
        that cannot be created is logged and the cache only computes."""
        check_cache_options(max_gb, dtype)
        self.directory = Path(directory).expanduser()
        self.max_bytes = int(max_gb * 1e9)
        self.dtype = dtype
        self.batch_size = batch_size
        self._submodels: dict[tuple[int, ...], tuple[keras.Model, list]] = {}  # see _submodel
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

    def key(self, split: FreezeSplit, images: np.ndarray | StoredRows) -> str:
        """What the activations depend on: trunk weights, images (and their size), boundary, dtype."""
        return self._entry(split.trunk, split.boundary, images_fingerprint(images), {}).path.name

    def _entry(self, trunk: keras.Model, boundary: tuple[str, ...], images: str, digests: dict) -> _Entry:
        return self._entry_of(weights_fingerprint(trunk, digests), boundary, images)

    def _entry_of(self, weights: str, boundary: tuple[str, ...], images: str) -> _Entry:
        parts = [str(FORMAT_VERSION), weights, images, ",".join(boundary), self.dtype]
        key = hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]
        return _Entry(self.directory / key, boundary, weights)

    def stored_features(self, trunk_fingerprint: str, boundary: tuple[str, ...],
                        images: np.ndarray | StoredRows) -> CachedFeatures | None:
        """The stored activations of ``images`` at ``boundary`` of the trunk whose weights hash to
        ``trunk_fingerprint``, read under the entry's shared lock (kept until ``release()``); None
        when they are not stored, are being written, or are damaged. Never computes: a caller
        without the trunk (``training.trunk_free``) asks with its fingerprint alone."""
        start = time.perf_counter()
        return self._read_shared(self._entry_of(trunk_fingerprint, boundary, images_fingerprint(images)), start)

    def store_entry(self, key: str, write: Callable[[Path], None]) -> bool:
        """Store an entry of other files than activations under ``key`` (``training.trunk_free``'s
        built tails): ``write(folder)`` fills a staging folder (its ``meta.json`` last), which is
        renamed into place, evicted like the others past ``train.cache_max_gb``. False, logged, when
        it cannot be stored (an I/O error, or stored by another job meanwhile)."""
        entry = self.directory / key
        staging = None
        try:
            staging = self._staging(key)
            write(staging)
            staging.rename(entry)
        except (OSError, ValueError) as error:  # ValueError: numpy refusing what it was asked to write
            if not (entry / META).exists():
                log.warning("trunk cache: could not store %s (%s); continuing without it", entry, error)
            return False
        finally:
            if staging is not None and staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        _touch(entry / META)
        self._evict(keep=entry)
        return True

    def _staging(self, key: str) -> Path:
        """A new staging folder for entry ``key``, naming this host and process as its writer (so
        that one left by a process that died is removed: ``_reap_if_abandoned``)."""
        staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{key}-", dir=self.directory))
        (staging / WRITER).write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid()}))
        return staging

    def read_entry(self, key: str, read: Callable[[Path], T], redone: str) -> T | None:
        """``read(folder)`` of the entry ``store_entry`` stored under ``key``, under its shared lock;
        None when there is none or it is being written or removed. ``read`` raises DamagedEntry for
        an entry it cannot trust, which is then removed (logged, with what is ``redone`` instead)."""
        entry = self.directory / key
        if not (entry / META).exists():
            return None
        lease = self._lock(key)
        if not lease.acquire(exclusive=False, wait=False):
            return None
        try:
            value = read(entry)
        except DamagedEntry as error:
            damaged = error
        else:
            damaged = None
        finally:
            lease.release()
        if damaged is not None:
            self.discard_entry(key, str(damaged), redone)
            return None
        _touch(entry / META)
        return value

    def _lock(self, key: str) -> FileLock:
        return FileLock(self.directory / LOCKS / f"{key}.lock")

    def activation_bytes(self, split: FreezeSplit, rows: int) -> int:
        """What the boundary activations of ``rows`` images take, stored in the cache's dtype."""
        return _activation_bytes(split.trunk, rows, self.dtype)

    def features(self, split: FreezeSplit, images: np.ndarray | StoredRows,
                 digests: dict[int, str] | None = None) -> CachedFeatures:
        """The boundary activations of ``images``: read from disk, or computed and stored.

        A miss starts from the nearest stored boundary upstream of this one (another freeze
        value's, same images, same weights up to there). Without one, it first gets the
        activations of the deepest layer that every boundary tensor depends on alone (in a
        ResNet, the output of the block the boundary cuts), as an entry of its own, and runs
        the rest from there: every freeze value cut inside that block then starts from it,
        whichever order a sweep runs them in, and parallel jobs compute it once.

        ``digests``: the trunk's weight hashes (``weights_fingerprint``), shared by the calls for
        the splits of one training, whose trunk does not change between them (hashing ResNet50's
        94 MB takes 0.2 s).
        """
        return self._features(split.trunk, split.boundary, images, images_fingerprint(images),
                              {} if digests is None else digests)

    def _features(self, trunk: keras.Model, boundary: tuple[str, ...], images: np.ndarray | StoredRows,
                  images_key: str, digests: dict) -> CachedFeatures:
        start = time.perf_counter()
        entry = self._entry(trunk, boundary, images_key, digests)
        found = self._read_shared(entry, start)
        if found is not None:
            return found
        size = _activation_bytes(trunk, len(images), self.dtype)
        if size > self.max_bytes:  # never stored, so nothing to lock
            log.warning("trunk cache: %.2f GB of activations exceed train.cache_max_gb (%.2f GB); not stored, "
                        "computed in memory", size / 1e9, self.max_bytes / 1e9)
            return self._in_memory(trunk, boundary, images, images_key, digests, start)
        lock = self._lock_exclusively(entry)
        try:
            if (entry.path / META).exists():  # computed by the job we waited for
                try:
                    meta, arrays = self._read(entry.path, expected_arrays=len(boundary))
                except DamagedEntry as error:
                    self._discard(entry.path, str(error))
                else:
                    _touch(entry.path / META)
                    return CachedFeatures(arrays, True, time.perf_counter() - start, meta["compute_seconds"])
            self._reap_staging(entry)
            meta = {"boundary": list(boundary), "images": int(len(images)), "images_fingerprint": images_key,
                    "weights_fingerprint": entry.weights, "image_shape": list(images.shape[1:]), "dtype": self.dtype}
            try:
                arrays, meta = self._compute_into(entry, trunk, images, digests, meta)
            except OSError as error:
                log.warning("trunk cache: could not store %s (%s); continuing without storing, the activations "
                            "computed in memory", entry.path, error)
                return self._in_memory(trunk, boundary, images, images_key, digests, start)
            return CachedFeatures(arrays, False, time.perf_counter() - start, meta["compute_seconds"],
                                  meta.get("derived_from"))
        finally:
            lock.release(remove=not (entry.path / META).exists())

    def _read_shared(self, entry: _Entry, start: float) -> CachedFeatures | None:
        """A hit, read under the entry's shared lock (kept by the result); None when the entry is
        missing, locked exclusively (being computed, repaired or evicted) or damaged."""
        if not (entry.path / META).exists():
            return None
        lease = self._lock(entry.path.name)
        if not lease.acquire(exclusive=False, wait=False):
            return None
        try:
            meta, arrays = self._read(entry.path, expected_arrays=len(entry.boundary))
        except DamagedEntry:  # repaired under the exclusive lock, which says so
            lease.release()
            return None
        _touch(entry.path / META)  # recently used: evicted last
        return CachedFeatures(arrays, True, time.perf_counter() - start, meta["compute_seconds"], lease=lease)

    def _lock_exclusively(self, entry: _Entry) -> FileLock:
        """The entry's exclusive lock, waiting (and saying so) while another job holds it."""
        lock = self._lock(entry.path.name)
        if not lock.acquire(exclusive=True, wait=False):
            log.info("trunk cache: waiting for entry %s (boundary %s), which another job is computing",
                     entry.path.name, list(entry.boundary))
            waited = time.perf_counter()
            lock.acquire(exclusive=True, wait=True)
            log.info("trunk cache: entry %s free after %.1f s", entry.path.name, time.perf_counter() - waited)
        return lock

    def _compute(self, trunk: keras.Model, boundary: tuple[str, ...], images: np.ndarray | StoredRows,
                 images_key: str, digests: dict) -> tuple[Iterator[list[np.ndarray]], list[str] | None]:
        """Batches of the trunk's outputs (a list of arrays in the cache's dtype each, computed as
        they are asked for) from a stored upstream boundary, else from the block it cuts, else from
        the images; and the stored boundary they start from (None: this job runs the images).
        The block's output (the cut) is an entry of its own, computed under its own lock: locks are
        taken from a boundary to its cut and never back, so jobs cannot wait on each other in a ring."""
        upstream = self._stored_upstream(trunk, boundary, images_key, digests)
        if upstream is not None:
            stored, meta_boundary = upstream
            return self._run_rest(trunk, stored), meta_boundary
        cut = dominating_tensor(trunk)
        if cut is not None:
            name = cut._keras_history.operation.name
            rest = self._submodel(cut, [tensor for tensor in trunk.outputs if tensor is not cut])
            found = self._features(self._submodel(trunk.inputs, cut), (name,), images, images_key, digests)
            batches = _released_after(self._run_rest(trunk, _Upstream([cut], rest, found.arrays)), found)
            return batches, ([name] if found.hit else found.derived_from)
        log.info("trunk cache: computing boundary %s from the images", list(boundary))
        batches = predict_batches(trunk, images, self.batch_size)
        return ([np.asarray(array, dtype=self.dtype) for array in batch] for batch in batches), None

    def _submodel(self, inputs, outputs) -> keras.Model:
        """``keras.Model(inputs, outputs)`` (a tensor or a list each), built once per such pair:
        each model object traces its forward pass once (about 2 s for ResNet50's trunk on 2 CPU
        cores), so the train and validation splits of one run share it."""
        tensors = [*(inputs if isinstance(inputs, list) else [inputs]),
                   *(outputs if isinstance(outputs, list) else [outputs])]
        key = tuple(id(tensor) for tensor in tensors)
        if key not in self._submodels:  # the tensors are kept with it, so their ids stay theirs
            self._submodels[key] = (keras.Model(inputs, outputs), tensors)
        return self._submodels[key][0]

    def _run_rest(self, trunk: keras.Model, upstream: _Upstream) -> Iterator[list[np.ndarray]]:
        """Batches of the trunk's outputs from stored upstream activations, read a batch at a time:
        the tensors both hold are passed through, ``upstream.rest`` computes the others."""
        stored = tuple(upstream.arrays)
        rest = upstream.rest
        computed = predict_batches(rest, stored, self.batch_size, preprocess=False) if rest else None
        for start in range(0, len(stored[0]), self.batch_size):
            outputs = iter(next(computed) if computed is not None else ())
            batch = []
            for tensor in trunk.outputs:
                passed = [i for i, u in enumerate(upstream.tensors) if u is tensor]
                array = stored[passed[0]][start:start + self.batch_size] if passed else next(outputs)
                batch.append(np.asarray(array, dtype=self.dtype))
            yield batch

    def _in_memory(self, trunk: keras.Model, boundary: tuple[str, ...], images: np.ndarray | StoredRows,
                   images_key: str, digests: dict, start: float) -> CachedFeatures:
        """A miss that is not stored (too large for the cache, or it could not be written): the
        activations computed into memory."""
        computing = time.perf_counter()
        batches, derived_from = self._compute(trunk, boundary, images, images_key, digests)
        parts: list[list[np.ndarray]] = [[] for _ in trunk.outputs]
        for batch in batches:
            for collected, array in zip(parts, batch, strict=True):
                collected.append(array)
        arrays = tuple(np.concatenate(collected) if collected else np.zeros((0, *tensor.shape[1:]), self.dtype)
                       for collected, tensor in zip(parts, trunk.outputs, strict=True))
        now = time.perf_counter()
        return CachedFeatures(arrays, False, now - start, now - computing, derived_from)

    def _compute_into(self, entry: _Entry, trunk: keras.Model, images: np.ndarray | StoredRows, digests: dict,
                      meta: dict) -> tuple[tuple[StoredRows, ...], dict]:
        """Compute the activations into the entry's staging folder a batch at a time (hashed as
        they are written) and rename it into place, atomically: a parallel job sees all or
        nothing. The entry's arrays (on disk) and its metadata. Raises OSError when they cannot be
        written (full disk, permissions, a read-only folder), leaving nothing behind. The caller
        holds the entry's exclusive lock."""
        computing = time.perf_counter()  # not counting the wait: what computing costs a sweep
        staging = None
        try:
            staging = self._staging(entry.path.name)
            files = [_RowsFile(staging / f"boundary_{i}.npy", (len(images), *tensor.shape[1:]), self.dtype)
                     for i, tensor in enumerate(trunk.outputs)]
            try:
                batches, derived_from = self._compute(trunk, entry.boundary, images, meta["images_fingerprint"],
                                                      digests)
                try:
                    for batch in batches:
                        for file, array in zip(files, batch, strict=True):
                            file.write(array)
                finally:
                    batches.close()  # lets go of an upstream entry's lease now, also after an error
            finally:
                for file in files:
                    file.file.close()
            recorded = [file.record() for file in files]
            meta = {**meta, "derived_from": derived_from, "compute_seconds": time.perf_counter() - computing,
                    "format": FORMAT_VERSION, "arrays": recorded}
            (staging / META).write_text(json.dumps(meta))
            try:
                staging.rename(entry.path)
            except OSError:
                if not (entry.path / META).exists():
                    raise
                # Stored by a job that could not lock (no locks here): same key, same activations; keep
                # theirs once checked. A damaged entry that could not be removed (a folder this user
                # cannot write) is never served: this job's activations go unstored.
                try:
                    meta, arrays = self._read(entry.path, expected_arrays=len(recorded))
                except DamagedEntry as error:
                    raise OSError(f"{entry.path} is damaged ({error}) and could not be replaced") from None
                _touch(entry.path / META)
                return arrays, meta
            _touch(entry.path / META)
            self._evict(keep=entry.path)
        finally:
            if staging is not None and staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        return tuple(StoredRows(entry.path / f"boundary_{i}.npy") for i in range(len(recorded))), meta

    def _read(self, entry: Path, expected_arrays: int | None = None) -> tuple[dict, tuple[StoredRows, ...]]:
        """An entry's metadata and arrays (on disk, read when used), every array's bytes checked (a
        chunk at a time) against the hash, shape and dtype recorded when it was stored. Raises
        DamagedEntry saying what does not match."""
        try:
            meta = json.loads((entry / META).read_text())
            if not isinstance(meta, dict) or not isinstance(meta.get("arrays"), list) \
                    or not isinstance(meta.get("compute_seconds"), (int, float)):
                raise DamagedEntry(f"{META} is not an entry's record (a JSON object with its arrays and "
                                   "compute_seconds)")
            recorded = meta["arrays"]
            wrong_count = expected_arrays is not None and len(recorded) != expected_arrays
            if meta.get("format") != FORMAT_VERSION or wrong_count:
                raise DamagedEntry(f"format {meta.get('format')!r} with {len(recorded)} array(s), expected format "
                                   f"{FORMAT_VERSION} with {expected_arrays}")
            arrays = []
            for i, expected in enumerate(recorded):
                array = StoredRows(entry / f"boundary_{i}.npy")
                if [list(array.shape), str(array.dtype), _array_hash(array)] != \
                        [expected["shape"], expected["dtype"], expected["hash"]]:
                    raise DamagedEntry(f"boundary_{i}.npy does not hold the array recorded in {META} "
                                       f"(shape {list(array.shape)}, dtype {array.dtype}, bytes hash differs)")
                arrays.append(array)
        except DamagedEntry:
            raise
        except (OSError, ValueError, KeyError, TypeError, EOFError) as error:  # missing, truncated, garbage
            raise DamagedEntry(f"{type(error).__name__}: {error}") from None
        return meta, tuple(arrays)

    def discard_entry(self, key: str, why: str, redone: str) -> None:
        """Remove entry ``key`` that cannot be trusted (logged: ``why``, and what is ``redone``
        instead), unless another job holds it."""
        lock = self._lock(key)
        if lock.acquire(exclusive=True, wait=False):
            self._discard(self.directory / key, why, redone)
            lock.release(remove=not (self.directory / key).exists())

    def _discard(self, entry: Path, why: str, redone: str = "the activations are computed again") -> None:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                entry.unlink()
        if entry.exists() or entry.is_symlink():  # one this user cannot remove: left, never served (_compute_into)
            log.warning("trunk cache: %s is damaged (%s) and could not be removed; %s", entry, why, redone)
        else:
            log.warning("trunk cache: %s is damaged (%s); removed, %s", entry, why, redone)

    def _clean_up(self) -> None:
        """Remove staging folders whose writer is gone, entries without metadata (orphans) and
        lock files of entries that are gone; whatever another job holds locked is left alone."""
        try:
            children = list(self.directory.iterdir())
            locks = list((self.directory / LOCKS).glob("*.lock"))
        except OSError:
            return
        for path in children:
            if path.name.startswith(STAGING_PREFIX):
                self._reap_if_abandoned(path)
            elif not path.name.startswith(".") and path.is_dir() and not (path / META).exists():
                lock = self._lock(path.name)
                if lock.acquire(exclusive=True, wait=False):
                    self._discard(path, f"no {META}: a partial or orphaned entry")
                    lock.release(remove=True)
            elif _ENTRY_NAME.fullmatch(path.name) and not path.is_dir():  # no entry could ever be stored there
                lock = self._lock(path.name)
                if lock.acquire(exclusive=True, wait=False):
                    self._discard(path, "not a folder")
                    lock.release(remove=True)
        for path in locks:
            lock = FileLock(path)
            if not (self.directory / path.stem).exists() and lock.acquire(exclusive=True, wait=False):
                lock.release(remove=not (self.directory / path.stem).exists())

    def _reap_staging(self, entry: _Entry) -> None:
        """Staging folders of ``entry`` (whose exclusive lock the caller holds) left by a job that died."""
        for path in self.directory.glob(f"{STAGING_PREFIX}{entry.path.name}-*"):
            self._reap_if_abandoned(path, locked=True)

    def _reap_if_abandoned(self, staging: Path, locked: bool = False) -> None:
        """Remove a staging folder when nobody writes it: its writer's process is gone (or it is
        old) and, for a folder named after its entry, nobody holds that entry's lock but ``locked``."""
        key = staging.name[len(STAGING_PREFIX):].split("-")[0]
        lock = self._lock(key)
        if not _abandoned(staging) or not (locked or len(key) != 32 or lock.acquire(exclusive=True, wait=False)):
            return
        log.warning("trunk cache: removing %s, left by a process that is gone", staging)
        shutil.rmtree(staging, ignore_errors=True)
        lock.release(remove=not (self.directory / key).exists())

    def _stored_upstream(self, trunk: keras.Model, boundary: tuple[str, ...], images_key: str,
                         digests: dict) -> tuple[_Upstream, list[str]] | None:
        """Stored activations this trunk can start from, and their boundary; None without any.

        An entry qualifies when it holds the same images, its boundary layers are frozen
        layers of this trunk, the weights up to them hash as they did, and this boundary is
        computable from them alone (Keras refuses a disconnected graph). The nearest such
        entry (fewest layers left to run) that no other job holds exclusively is used.
        """
        candidates = []
        for meta_path in self.directory.glob(f"[!.]*/{META}"):  # not staging folders
            try:
                meta = json.loads(meta_path.read_text())
            except (OSError, ValueError):  # evicted by another job, or damaged: read() removes it when asked
                continue
            if not isinstance(meta, dict) or not isinstance(meta.get("boundary"), list) \
                    or not all(isinstance(name, str) for name in meta["boundary"]):
                continue  # not an entry's record (damaged): _read refuses it when its own job asks for it
            if meta.get("format") != FORMAT_VERSION or meta.get("images_fingerprint") != images_key \
                    or meta.get("dtype") != self.dtype or tuple(meta["boundary"]) == boundary:
                continue
            try:
                upstream = [trunk.get_layer(name).output for name in meta["boundary"]]
                prefix = keras.Model(trunk.inputs, upstream)
                remaining = [t for t in trunk.outputs if not any(t is u for u in upstream)]
                rest = self._submodel(upstream, remaining) if remaining else None
            except ValueError:  # not a layer of this trunk, or downstream of this boundary
                continue
            if weights_fingerprint(prefix, digests) == meta.get("weights_fingerprint"):
                candidates.append((len(rest.layers) if rest else 0, meta_path.parent, meta, upstream, rest))
        for _, path, meta, tensors, rest in sorted(candidates, key=lambda c: c[0]):
            lease = self._lock(path.name)
            if not lease.acquire(exclusive=False, wait=False):
                continue
            try:
                _, stored = self._read(path)
            except DamagedEntry:  # repaired when its own job asks for it
                continue
            finally:
                lease.release()  # the StoredRows keep their files open: an eviction cannot take them away
            return _Upstream(tensors, rest, stored), meta["boundary"]
        return None

    def _evict(self, keep: Path) -> None:
        """Least recently used entries first, until the cache fits its limit; an entry another job
        reads or writes (its lock is taken) is skipped, as are staging folders."""
        # Another job may evict or repair an entry while this one looks: one that is gone is passed over.
        used = {p: _used(p) for p in self.directory.iterdir() if not p.name.startswith(".")}
        entries = [p for p, found in used.items() if found is not None]
        sizes = {p: used[p][1] for p in entries}
        total = sum(sizes.values())
        busy = 0
        for entry in sorted(entries, key=lambda p: used[p][0]):
            if total <= self.max_bytes:
                break
            lock = self._lock(entry.name)
            if entry == keep or not lock.acquire(exclusive=True, wait=False):
                busy += entry != keep
                continue
            shutil.rmtree(entry, ignore_errors=True)
            lock.release(remove=True)
            total -= sizes[entry]
            log.info("trunk cache: evicted %s (%.1f MB) to stay under train.cache_max_gb", entry.name,
                     sizes[entry] / 1e6)
        if total > self.max_bytes and busy:
            log.info("trunk cache: %.2f GB stored, over train.cache_max_gb, while %d entr%s in use by other jobs",
                     total / 1e9, busy, "y is" if busy == 1 else "ies are")

    def size_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.directory.rglob("*.npy"))


def _activation_bytes(trunk: keras.Model, rows: int, dtype: str) -> int:
    """What ``trunk``'s outputs for ``rows`` images take in ``dtype``."""
    per_row = sum(int(np.prod(tensor.shape[1:])) for tensor in trunk.outputs)
    return rows * per_row * np.dtype(dtype).itemsize


def _used(entry: Path) -> tuple[float, int] | None:
    """When an entry was last used and the bytes it holds; None for what is not an entry or is gone."""
    try:
        return (entry / META).stat().st_mtime, sum(f.stat().st_size for f in entry.iterdir())
    except OSError:  # not a folder, no meta.json, or removed meanwhile by another job
        return None


def _released_after(batches: Iterator[list[np.ndarray]], found: CachedFeatures) -> Iterator[list[np.ndarray]]:
    """``batches``, then (or when closed early) ``found``'s lease released."""
    try:
        yield from batches
    finally:
        found.release()


class _RowsFile:
    """A ``.npy`` file written a batch of rows at a time, its bytes hashed as they are written
    (the hash ``_read`` checks: ``_array_hash`` of the whole array)."""

    def __init__(self, path: Path, shape: tuple[int, ...], dtype: str) -> None:
        self.path, self.shape, self.dtype = path, tuple(int(n) for n in shape), np.dtype(dtype)
        self.rows = 0
        self.digest = hashlib.sha256()
        self.file = open(path, "wb")  # closed by the writer, after the last batch or an error
        np.lib.format.write_array_header_1_0(self.file, {
            "descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": self.shape})

    def write(self, rows: np.ndarray) -> None:
        block = np.ascontiguousarray(rows, dtype=self.dtype).reshape(-1).view(np.uint8)
        self.digest.update(block)
        self.file.write(block)
        self.rows += len(rows)

    def record(self) -> dict:
        """The written file's record in the entry's metadata (shape, dtype, hash). Raises OSError
        when fewer or more rows were written than the shape says."""
        if self.rows != self.shape[0]:
            raise OSError(f"{self.path}: {self.rows} rows written, {self.shape[0]} expected")
        return {"shape": list(self.shape), "dtype": str(self.dtype), "hash": self.digest.hexdigest()[:32]}


def _array_hash(array: np.ndarray | StoredRows, prefix: str = "") -> str:
    digest = hashlib.sha256(prefix.encode())
    update_digest(digest, array)  # a chunk at a time, in memory or on disk
    return digest.hexdigest()[:32]


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
