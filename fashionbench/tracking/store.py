"""Where runs go and how they are read back: the tracking URI, experiments, run records, artifacts.

The store defaults to a SQLite file addressed by an absolute path (relative to the directory the
command was launched from), so every Hydra job of a sweep, whatever its working directory, writes
to the same one. A tracking server (``http://host:port``) is checked to answer within seconds
before anything else happens, and creates the experiments, so that their artifacts go to the
server's artifact root rather than to each client's disk (experiments/scale_out/README.md).
"""

from __future__ import annotations

import http.client
import logging
import os
import ssl
import tempfile
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from fashionbench.artifacts import CHECKSUMS, SWEEP_PARENT, TAG_SWEEP, TAG_SWEEP_ID, TAG_SWEEP_REUSED_PREFIX
from fashionbench.data.checksums import read_checksums
from fashionbench.runtime.locks import LockTimeout, locked
from fashionbench.tracking.races import lost_race, retry_lost_race
from fashionbench.tracking.records import LATEST, RunRecord, latest_sweep_id
from fashionbench.tracking.settings import SERVER_SCHEMES, SQLITE, TrackingSettings

log = logging.getLogger(__name__)

# A tracking server that has not answered in this many seconds is unreachable. MLflow's own client
# would retry a refused connection for about four minutes (7 retries, backoff factor 2) before it
# said anything; its retries stay as they are for the requests of a run, once the server answered.
SERVER_ANSWER_SECONDS = 10
# Creating a fresh SQLite store takes about 2 s; a process waits this long for another to finish.
STORE_LOCK_SECONDS = 120


class ExperimentNotFoundError(LookupError):
    """The named experiment is not in the store."""


class SweepNotFoundError(LookupError):
    """``--sweep latest`` in an experiment that has no sweep."""


class StoreNotFoundError(LookupError):
    """A command that only reads found no store (it never creates one); or the store cannot be read."""


class StoreUnreachableError(StoreNotFoundError):
    """No tracking server answers at the configured URI."""


class StoreLockTimeout(StoreNotFoundError):
    """Another process has held the lock on a SQLite store for longer than creating one takes."""


def check_server_answers(uri: str, seconds: float = SERVER_ANSWER_SECONDS) -> None:
    """For an http(s) tracking URI, raise StoreUnreachableError (one line naming the URI) unless a
    server answers there within ``seconds``: any HTTP answer counts (an authenticating proxy, a
    server without ``/health``), and so does a TLS handshake this check cannot verify (MLflow has
    its own certificate settings), since MLflow's own requests then say what is wrong. Other
    stores are not checked here."""
    if not uri.startswith(SERVER_SCHEMES):
        return
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=seconds):
            return
    except urllib.error.HTTPError:  # an answer, whatever its status
        return
    except (OSError, http.client.HTTPException) as error:  # refused, unknown host, silent, not HTTP
        reason = getattr(error, "reason", None) or error or type(error).__name__
        if isinstance(reason, ssl.SSLError):  # a server answered
            return
        raise StoreUnreachableError(
            f"the MLflow tracking server {uri} does not answer ({reason}): start it "
            "(experiments/scale_out/README.md), or set tracking.uri / --tracking-uri / $MLFLOW_TRACKING_URI"
        ) from None


@contextmanager
def _creation_lock(uri: str) -> Iterator[None]:
    """Held while a process opens a SQLite store: two processes that create the same fresh file at
    once break it ("table latest_metrics already exists", a half-migrated alembic_version, and one
    of them dies with no record). The lock file sits beside the database, so processes on every
    host that shares the file see it; the wait is bounded."""
    if not uri.startswith(SQLITE):
        yield
        return
    lock_path = uri[len(SQLITE):] + ".lock"
    try:
        with locked(Path(lock_path), timeout=STORE_LOCK_SECONDS):
            yield
    except LockTimeout:
        raise StoreLockTimeout(f"another process has held {lock_path} for over {STORE_LOCK_SECONDS} s while "
                               f"opening the MLflow store {uri}; if none is running, delete the lock file") from None


def writable_store(settings: TrackingSettings) -> MlflowClient:
    """A client of the store, which exists once this returns: a server must answer within seconds
    (StoreUnreachableError), and a fresh SQLite file is created and migrated under a file lock,
    then moved into place (``_create_sqlite_store``)."""
    check_server_answers(settings.uri)
    mlflow.set_tracking_uri(settings.uri)
    with _creation_lock(settings.uri):
        if settings.uri.startswith(SQLITE) and not _sqlite_file(settings.uri).exists():
            _create_sqlite_store(_sqlite_file(settings.uri))
        client = MlflowClient(settings.uri)
        client.search_experiments(max_results=1)
    return client


def _sqlite_file(uri: str) -> Path:
    """The database file of a ``sqlite:///`` URI (without SQLAlchemy's ``?option=`` query)."""
    return Path(uri[len(SQLITE):].partition("?")[0])


def _create_sqlite_store(database: Path) -> None:
    """Create and migrate a SQLite store in a file beside ``database``, then rename it into place:
    a Ctrl-C, a SIGKILL or a full disk while MLflow runs its dozens of migrations leaves no
    half-migrated file (every later command failed on it: "table evaluation_datasets already
    exists"), only a staging file, removed here or by the next creation. Each attempt's staging
    file has a name of its own: MLflow keeps a store (and its connections) per URI for the life
    of the process."""
    for leftover in database.parent.glob(f".{database.name}.creating-*"):  # a creation killed outright
        leftover.unlink(missing_ok=True)  # safe: we hold the creation lock
    staging = database.with_name(f".{database.name}.creating-{uuid.uuid4().hex}")
    try:
        MlflowClient(SQLITE + str(staging)).search_experiments(max_results=1)  # creates and migrates it
        os.replace(staging, database)
    finally:
        for leftover in (staging, staging.with_name(staging.name + "-journal")):
            leftover.unlink(missing_ok=True)


def require_store(settings: TrackingSettings) -> None:
    """For commands that read runs (promote, report, compare, recommend): raise StoreNotFoundError,
    in one line naming the file or URI, when the store does not exist (a SQLite file is never
    created by reading it) or cannot be read (a damaged file, a server that does not answer:
    StoreUnreachableError, within seconds)."""
    check_server_answers(settings.uri)
    if settings.uri.startswith(SQLITE):
        database = Path(settings.uri[len(SQLITE):])
        if not database.is_file():
            raise StoreNotFoundError(f"no MLflow store at {database} (--tracking-uri, $MLFLOW_TRACKING_URI or "
                                     f"./mlflow.db): run an experiment first, or point at an existing store")
    try:
        MlflowClient(settings.uri).search_experiments(max_results=1)
    except Exception as error:  # noqa: BLE001 - sqlite3.DatabaseError, MlflowException, connection errors
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise StoreNotFoundError(f"the MLflow store {settings.uri} cannot be read: {first_line[:300]}") from None


# The MLflow UI (3.x) opens an experiment without this tag on its GenAI overview ("Traces 0");
# with it, on the training runs.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


def ensure_experiment(settings: TrackingSettings) -> str:
    """Create (and so migrate) the store and the experiment if needed, marked as model training
    so that the MLflow UI opens on its runs; return the experiment id. Raises
    StoreUnreachableError, naming the URI, when a tracking server does not answer."""
    client = writable_store(settings)
    experiment = client.get_experiment_by_name(settings.experiment_name)
    if experiment is None:
        try:
            return client.create_experiment(settings.experiment_name, artifact_location=settings.artifact_location,
                                            tags=EXPERIMENT_KIND)
        except MlflowException as error:  # another process created it since we looked
            if not lost_race(error):
                raise
            experiment = client.get_experiment_by_name(settings.experiment_name)
    if settings.uri.startswith(SERVER_SCHEMES) and _on_client_disk(experiment.artifact_location):
        log.warning("experiment %r on the server %s keeps its artifacts at %s, on each client's own disk (it was "
                    "created outside the server); to keep them in the server's artifact root, use an experiment "
                    "created through the server (another tracking.experiment_name)", settings.experiment_name,
                    settings.uri, experiment.artifact_location)
    for key, value in EXPERIMENT_KIND.items():
        if experiment.tags.get(key) != value:  # created before the tag was set
            tag = (experiment.experiment_id, key, value)
            retry_lost_race(lambda tag=tag: client.set_experiment_tag(*tag), "the experiment's tag")
    return experiment.experiment_id


def _on_client_disk(artifact_location: str) -> bool:
    """A file: URI or a plain path (no scheme): where each client writes on its own disk."""
    return artifact_location.startswith("file:") or ":" not in artifact_location


def experiment_runs(settings: TrackingSettings, sweep_id: str | None = None) -> list[RunRecord]:
    """Every run of the experiment (only the runs of one sweep, by its parent's id, when
    ``sweep_id`` is given: its children and the earlier runs it reused when resumed), oldest
    first. Raises ExperimentNotFoundError naming the store."""
    if sweep_id is None:
        return _search_runs(settings, "")
    children, reused = sweep_runs(settings, sweep_id)
    return sorted(children + reused, key=lambda run: run.start_time)


def sweep_runs(settings: TrackingSettings, parent_id: str) -> tuple[list[RunRecord], list[RunRecord]]:
    """A sweep's own runs (tag ``sweep_id``), and the earlier FINISHED runs whose jobs it skipped
    (the parent's ``sweep_reused/<run id>`` tags), each oldest first."""
    children = _search_runs(settings, f"tags.{TAG_SWEEP_ID} = '{parent_id}'")
    parent_tags = MlflowClient(settings.uri).get_run(parent_id).data.tags
    own = {run.run_id for run in children}  # a job skipped for an earlier job of the same sweep
    reused_ids = [key[len(TAG_SWEEP_REUSED_PREFIX):] for key in parent_tags
                  if key.startswith(TAG_SWEEP_REUSED_PREFIX) and key[len(TAG_SWEEP_REUSED_PREFIX):] not in own]
    reused = []
    for start in range(0, len(reused_ids), 100):  # a bounded IN list per search
        reused += _search_runs(settings, _run_id_filter(reused_ids[start:start + 100]))
    return children, sorted(reused, key=lambda run: run.start_time)


def finished_runs_with(settings: TrackingSettings, tag: str, value: str) -> list[RunRecord]:
    """The experiment's FINISHED runs whose tag ``tag`` is ``value``, newest first (none when the
    experiment does not exist yet): how a sweep job finds its earlier run (tracking.resume) and
    a run finds trained weights to reuse (tracking.reuse_training)."""
    try:
        runs = _search_runs(settings, f"attributes.status = 'FINISHED' and tags.{tag} = '{value}'")
    except ExperimentNotFoundError:
        return []
    return runs[::-1]


def _search_runs(settings: TrackingSettings, filter_string: str) -> list[RunRecord]:
    """The experiment's runs that match ``filter_string``, oldest first, every page of them."""
    mlflow.set_tracking_uri(settings.uri)
    client = MlflowClient(settings.uri)
    experiment = client.get_experiment_by_name(settings.experiment_name)
    if experiment is None:
        names = [e.name for e in client.search_experiments()]
        raise ExperimentNotFoundError(
            f"no experiment {settings.experiment_name!r} in the MLflow store {settings.uri} "
            f"(it has {names or 'none'})"
        )
    records, token = [], None
    while True:
        page = client.search_runs([experiment.experiment_id], filter_string, max_results=1000,
                                  order_by=["attributes.start_time ASC"], page_token=token)
        records += [RunRecord(run.info.run_id, run.info.run_name or "", run.info.status, run.info.start_time,
                              dict(run.data.params), dict(run.data.metrics), dict(run.data.tags))
                    for run in page]
        token = page.token
        if not token:
            return records


def resolve_sweep(settings: TrackingSettings, sweep: str | None) -> str | None:
    """``--sweep``: a sweep parent run's id, ``latest`` as the most recently started sweep's id, or
    None (the whole experiment). Raises SweepNotFoundError, in one line naming the id and the
    experiment's sweeps, when there is no such sweep (or no sweep at all, for ``latest``)."""
    if sweep is None:
        return None
    parents = _search_runs(settings, f"tags.{TAG_SWEEP} = '{SWEEP_PARENT}'")
    if sweep == LATEST:
        sweep_id = latest_sweep_id(parents)
        if sweep_id is None:
            raise SweepNotFoundError(f"--sweep {LATEST}: experiment {settings.experiment_name!r} has no sweep")
        return sweep_id
    if any(parent.run_id == sweep for parent in parents):
        return sweep
    known = ", ".join(f"{p.run_id} ({p.run_name})" for p in parents[::-1][:5]) + (" ..." if len(parents) > 5 else "")
    name = settings.experiment_name
    what = (f"run {sweep} of experiment {name!r} is not a sweep's parent run"
            if _search_runs(settings, _run_id_filter([sweep])) else f"experiment {name!r} has no run {sweep}")
    raise SweepNotFoundError(f"--sweep {sweep}: {what}; " + (f"its sweeps, newest first: {known}" if parents
                                                             else "it has no sweep") + f" (or --sweep {LATEST})")


def _run_id_filter(run_ids: list[str]) -> str:
    return "attributes.run_id IN (" + ", ".join(f"'{run_id}'" for run_id in run_ids) + ")"


def download_run_artifacts(settings: TrackingSettings, run_id: str, artifact_path: str, destination: Path) -> Path:
    """Copy one artifact file or folder of a run into ``destination``; return its local path."""
    destination.mkdir(parents=True, exist_ok=True)
    return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact_path,
                                                    dst_path=str(destination), tracking_uri=settings.uri))


def run_checksums(settings: TrackingSettings, run_id: str) -> dict[str, dict]:
    """What the run recorded of the files it logged (``fashionbench.data.checksums``): artifact path ->
    size and hash; empty for a run logged before checksums. ArtifactError for a damaged record."""
    if not MlflowClient(settings.uri).list_artifacts(run_id, CHECKSUMS):
        return {}
    recorded: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as scratch:
        folder = download_run_artifacts(settings, run_id, CHECKSUMS, Path(scratch))
        for path in sorted(folder.glob("*.json")):
            recorded.update(read_checksums(path, f"run {run_id}: {CHECKSUMS}/"))
    return recorded


class StoredRun:
    """A tracked run's artifacts and logged model, read from the store
    (a ``serving.bundle.RunArtifacts``: what ``build_bundle`` reads)."""

    def __init__(self, settings: TrackingSettings, record: RunRecord) -> None:
        self.settings = settings
        self.record = record
        self.run_id = record.run_id
        self.metrics = record.metrics

    def download(self, artifact_path: str, destination: Path) -> Path:
        return download_run_artifacts(self.settings, self.run_id, artifact_path, destination)

    def checksums(self) -> dict[str, dict]:
        return run_checksums(self.settings, self.run_id)

    def keras_model(self) -> Any:
        # Keras loads here, where a model is needed: reading runs (compare, report) never imports it.
        from fashionbench.tracking.run_models import load_run_model

        return load_run_model(self.settings, self.run_id)

    def save_model(self, directory: Path) -> None:
        from fashionbench.tracking.run_models import save_run_model

        save_run_model(self.settings, self.run_id, directory)
