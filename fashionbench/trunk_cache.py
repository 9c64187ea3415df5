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

from fashionbench.config import EvalConfig, TrainConfig, check_cache_options
from fashionbench.model import predict_in_batches
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
    """A hash of every weight of ``model`` (trainable or not: BatchNorm statistics count)."""
    digest = hashlib.blake2b(digest_size=16)
    for variable in model.weights:
        value = np.ascontiguousarray(keras.ops.convert_to_numpy(variable))
        digest.update(f"{variable.path}:{value.dtype}:{value.shape}".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def images_fingerprint(images: np.ndarray) -> str:
    """A hash of an image array's bytes, dtype and shape (so of the image size too)."""
    digest = hashlib.blake2b(f"{images.dtype}:{images.shape}".encode(), digest_size=16)
    digest.update(np.ascontiguousarray(images).tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class CachedFeatures:
    """The boundary activations of one image set, and what getting them cost."""

    arrays: tuple[np.ndarray, ...]  # one per boundary tensor, ``len(images)`` rows each
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

    def features(self, split: FreezeSplit, images: np.ndarray) -> CachedFeatures:
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
        arrays, derived_from = self._derive(split, images_key)
        if arrays is None:
            outputs = predict_in_batches(split.trunk, images, self.batch_size)
            outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
            arrays = tuple(np.asarray(a, dtype=self.dtype) for a in outputs)
        compute_seconds = time.perf_counter() - start
        self._store(entry, arrays, {"boundary": list(split.boundary), "images": int(len(images)),
                                    "images_fingerprint": images_key, "weights_fingerprint": weights,
                                    "image_shape": list(images.shape[1:]), "dtype": self.dtype,
                                    "derived_from": derived_from, "compute_seconds": compute_seconds})
        return CachedFeatures(arrays, False, time.perf_counter() - start, compute_seconds, derived_from)

    def _read(self, entry: Path, expected_arrays: int | None = None) -> tuple[dict, tuple[np.ndarray, ...]]:
        """An entry's metadata and arrays, every array checked against the hash, shape and dtype
        recorded when it was stored. Raises DamagedEntry saying what does not match."""
        try:
            meta = json.loads((entry / META).read_text())
            recorded = meta["arrays"]
            wrong_count = expected_arrays is not None and len(recorded) != expected_arrays
            if meta.get("format") != FORMAT_VERSION or wrong_count:
                raise DamagedEntry(f"format {meta.get('format')!r} with {len(recorded)} array(s), expected format "
                                   f"{FORMAT_VERSION} with {expected_arrays}")
            arrays = []
            for i, expected in enumerate(recorded):
                array = np.load(entry / f"boundary_{i}.npy", allow_pickle=False)
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

    def _derive(self, split: FreezeSplit, images_key: str) -> tuple[tuple[np.ndarray, ...] | None, list | None]:
        """This boundary's activations computed from a stored upstream boundary, or (None, None).

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
            return None, None
        _, entry, meta, upstream, rest = min(candidates, key=lambda c: c[0])
        try:
            _, stored = self._read(entry)
        except DamagedEntry as error:
            self._discard(entry, str(error))
            return None, None
        outputs = rest.predict(tuple(stored), batch_size=self.batch_size, verbose=0) if rest else []
        computed = iter([outputs] if rest is not None and len(rest.outputs) == 1 else outputs)
        arrays = []
        for tensor in split.trunk.outputs:
            passed = [i for i, u in enumerate(upstream) if u is tensor]
            arrays.append(stored[passed[0]] if passed else np.asarray(next(computed), dtype=self.dtype))
        return tuple(arrays), meta["boundary"]

    def _store(self, entry: Path, arrays: tuple[np.ndarray, ...], meta: dict) -> None:
        """Write an entry (hashes of its arrays in its metadata), atomically; on any I/O error
        (full disk, permissions, a read-only folder) log it, leave nothing behind and go on."""
        size = sum(a.nbytes for a in arrays)
        if size > self.max_bytes:
            log.warning("trunk cache: %.2f GB of activations exceed train.cache_max_gb (%.2f GB); not stored",
                        size / 1e9, self.max_bytes / 1e9)
            return
        staging = None
        try:
            # Written to a temporary directory and renamed: a parallel job sees all or nothing.
            staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=self.directory))
            (staging / WRITER).write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid()}))
            for i, array in enumerate(arrays):
                np.save(staging / f"boundary_{i}.npy", array, allow_pickle=False)
            meta = {**meta, "format": FORMAT_VERSION, "arrays": [
                {"shape": list(a.shape), "dtype": str(a.dtype), "hash": _array_hash(a)} for a in arrays]}
            (staging / META).write_text(json.dumps(meta))
            try:
                staging.rename(entry)
            except OSError:
                if not (entry / META).exists():
                    raise
                # Another job stored the same entry first: same key, same activations; keep theirs.
            _touch(entry / META)
            self._evict(keep=entry)
        except OSError as error:
            log.warning("trunk cache: could not store %s (%s); continuing without storing", entry, error)
        finally:
            if staging is not None and staging.exists():
                shutil.rmtree(staging, ignore_errors=True)

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


def _array_hash(array: np.ndarray) -> str:
    return hashlib.blake2b(np.ascontiguousarray(array).tobytes(), digest_size=16).hexdigest()


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
