"""What each config option decides: declared once, on the schema field, and read by everything
that must know which options change which result.

Every field of every schema is declared with ``option(default, decides=<stage>)``: the first
result of the pipeline that its value changes. A result changes when one of its own options
changes or an option of a result it is computed from does (``UPSTREAM``), so

- the training fingerprint (``tracking.reuse_training``) covers the options that decide ``DATA``
  and ``TRAINING``, ``device.mixed_precision`` among them;
- the job fingerprint (``tracking.resume``) covers every option that decides any result;
- the results a process keeps for the next job of a sweep are keyed by the options of their stage;
- ``compare`` names the options that decide ``USERS`` (who is evaluated on what) when runs are
  not comparable, treats options declared ``seed=True`` as draws rather than designs, and never
  counts a ``PLACEMENT`` option (where runs are logged, where caches live) as swept.

``fashionbench.config.option_roles`` collects the declarations of every schema by dotted name;
a field declared without ``option`` has no role and is refused there, so a new option cannot be
left out of a fingerprint by accident.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import MISSING, dataclass
from enum import StrEnum
from typing import Any


class Stage(StrEnum):
    """The results of one run, each decided by its own options and those of its inputs."""

    DATA = "data"  # the catalogue: images, labels, splits
    TRAINING = "training"  # the trained weights (and how long training took)
    EMBEDDING = "embedding"  # what is read from the trained model: predictions, item embeddings
    INDEX = "index"  # the shop's per-category indexes and their measured quality
    USERS = "users"  # the users, their favourites and the held-out splits
    EVALUATION = "evaluation"  # the metrics of the model and the reference ladder
    PLACEMENT = "placement"  # none: where runs are logged and caches kept, what a run is called


# Each result and the results it is computed from (itself included).
UPSTREAM: dict[Stage, frozenset[Stage]] = {
    Stage.DATA: frozenset({Stage.DATA}),
    Stage.TRAINING: frozenset({Stage.DATA, Stage.TRAINING}),
    Stage.EMBEDDING: frozenset({Stage.DATA, Stage.TRAINING, Stage.EMBEDDING}),
    Stage.INDEX: frozenset({Stage.DATA, Stage.TRAINING, Stage.EMBEDDING, Stage.INDEX}),
    Stage.USERS: frozenset({Stage.DATA, Stage.USERS}),
    Stage.EVALUATION: frozenset(set(Stage) - {Stage.PLACEMENT}),
    Stage.PLACEMENT: frozenset({Stage.PLACEMENT}),
}


@dataclass(frozen=True)
class Role:
    """What one option decides, and whether its value is a draw (a seed) rather than a design."""

    decides: Stage
    seed: bool = False


# The seed every seed option defaults to (``seed`` drives data.seed, model.seed, users.seed, ...).
DEFAULT_SEED = 0


class ConfigError(ValueError):
    """An invalid option; the message names it (``train.epochs``) and what was expected."""


_ROLE = "fashionbench.role"  # the dataclass field metadata key


def option(default: Any = MISSING, *, decides: Stage, seed: bool = False,
           factory: Callable[[], Any] | None = None, kw_only: bool | Any = MISSING) -> Any:
    """A schema field that declares what it decides: ``dataclasses.field`` with a ``Role``."""
    if factory is not None:
        return dataclasses.field(default_factory=factory, kw_only=kw_only, metadata={_ROLE: Role(decides, seed)})
    return dataclasses.field(default=default, kw_only=kw_only, metadata={_ROLE: Role(decides, seed)})


class UndeclaredOptionError(TypeError):
    """A schema field declared without ``option(..., decides=...)``."""


def schema_roles(schema: type, groups: Mapping[str, Iterable[type]] | None = None, prefix: str = ""
                 ) -> dict[str, Role]:
    """``{"model.freeze": Role(TRAINING), ...}`` for a schema's fields: nested schemas by their
    dotted names, and a config group's field (``data``, whose schema the defaults choose) by every
    schema in ``groups[name]``. Raises UndeclaredOptionError naming the first field without a
    role, or a field that two schemas of one group declare differently."""
    roles: dict[str, Role] = {}
    for item in dataclasses.fields(schema):
        name = f"{prefix}{item.name}"
        if _ROLE in item.metadata:
            roles[name] = item.metadata[_ROLE]
        elif groups and item.name in groups:
            for member in groups[item.name]:
                for key, role in schema_roles(member, prefix=f"{name}.").items():
                    if roles.setdefault(key, role) != role:
                        raise UndeclaredOptionError(f"{key} is declared {roles[key]} in one {item.name} schema and "
                                                    f"{role} in {member.__qualname__}: one option, one role")
        elif dataclasses.is_dataclass(nested := typing.get_type_hints(schema).get(item.name)):
            roles.update(schema_roles(nested, prefix=f"{name}."))
        else:
            raise UndeclaredOptionError(
                f"{schema.__module__}.{schema.__qualname__}.{item.name} does not say what it decides: declare it "
                f"with fashionbench.options.option(default, decides=Stage.<{'|'.join(s.name for s in Stage)}>)")
    return roles


def role_of(name: str, roles: Mapping[str, Role]) -> Role | None:
    """The role of a flattened config key: its own, or that of the option it lies under
    (``data.categories.Skirt`` is part of ``data.categories``)."""
    while name:
        if name in roles:
            return roles[name]
        name = name.rpartition(".")[0]
    return None


def options_deciding(stages: Iterable[Stage], roles: Mapping[str, Role]) -> tuple[str, ...]:
    """The dotted names of the options whose results are among ``stages``, sorted."""
    wanted = set(stages)
    return tuple(sorted(name for name, role in roles.items() if role.decides in wanted))


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config -> {"model.freeze": 4, ...}: options by their dotted names, what fingerprints
    select from and (as strings) the params a run logs."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat

