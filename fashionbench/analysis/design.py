"""A study's design, read off its runs' params: what was varied on purpose, what is a draw.

What an option means for a comparison is declared on its schema field (``fashionbench.options``)
and collected by ``fashionbench.config.option_roles``:

- options declared ``seed=True`` choose a draw, not a design: runs that differ only in them are
  replicates of one configuration (``SEED_PARAMS``);
- options that decide the users and the data they are drawn from decide who is evaluated on what:
  they are named when runs cannot be compared pair by pair (``USERS_AND_SPLITS``);
- options that decide no result (where runs are logged and caches kept) are never swept.
"""

from __future__ import annotations

from collections.abc import Sequence

from fashionbench.config import option_roles
from fashionbench.options import UPSTREAM, Stage, role_of
from fashionbench.tracking.records import RunRecord

_ROLES = option_roles()
# Top-level first: ``seed`` names the group of seeds it drives.
SEED_PARAMS = tuple(sorted((name for name, role in _ROLES.items() if role.seed), key=lambda n: (n.count("."), n)))
USERS_AND_SPLITS = UPSTREAM[Stage.USERS]


def decides(param: str, stages: frozenset[Stage]) -> bool:
    """Whether the option behind a logged param decides one of ``stages``."""
    role = role_of(param, _ROLES)
    return role is not None and role.decides in stages


def not_swept(param: str) -> bool:
    """Whether a param differs between runs without being part of the experiment's design: an
    option declared to decide no result (where runs are logged and caches kept, a run's name)."""
    role = role_of(param, _ROLES)
    return role is not None and role.decides is Stage.PLACEMENT


def swept_parameters(runs: Sequence[RunRecord]) -> list[str]:
    """Params every run has and whose values differ between ``runs``, one per group of params
    that always vary together (``freeze`` drives ``model.freeze``: keep ``freeze``, the
    top-level name). A param only some runs have is not swept: see ``uneven_parameters``."""
    # Top-level names first (freeze before model.freeze, seed before data.seed): a group of params
    # that vary together is shown by the name the command line sets.
    names = sorted(set.intersection(*(set(run.params) for run in runs)), key=lambda n: (n.count("."), n)) \
        if runs else []
    seen_columns, swept = set(), []
    for name in names:
        if not_swept(name):
            continue
        column = tuple(run.params[name] for run in runs)
        if len(set(column)) > 1 and column not in seen_columns:
            seen_columns.add(column)
            swept.append(name)
    return swept


def uneven_parameters(runs: Sequence[RunRecord]) -> list[str]:
    """Params that only some of ``runs`` have: the config itself changed between the runs."""
    if not runs:
        return []
    params = [set(run.params) for run in runs]
    return sorted(set.union(*params) - set.intersection(*params))


class UnknownConfigurationError(ValueError):
    """Runs whose configuration cannot be told: a param that varies between the runs that have it is
    missing from others; the message names it and those runs."""


def configuration_params(runs: Sequence[RunRecord]) -> list[str]:
    """The swept params that make a configuration: every swept param but the seeds.

    Raises UnknownConfigurationError when a param that varies between the runs that have it is
    missing from others (a param deleted from a run, a run logged by another version of the
    config): those runs' configuration (or, for a seed, their replicate) is unknown, and pooling
    them would compare nothing."""
    for name in uneven_parameters(runs):
        values = {run.params[name] for run in runs if name in run.params}
        if len(values) > 1 and not not_swept(name):  # a seed too: the run's replicate would be unknown
            lacking = [run for run in runs if name not in run.params]
            names = ", ".join(f"{run.run_id} ({run.run_name})" for run in lacking[:5])
            raise UnknownConfigurationError(
                f"the param {name!r} varies between the runs ({', '.join(sorted(values)[:6])}) but {len(lacking)} "
                f"run(s) lack it: {names}{' ...' if len(lacking) > 5 else ''}; their configuration is unknown. "
                "Leave them out (--runs), or --group-by the params to compare by")
    return [p for p in swept_parameters(runs) if p not in SEED_PARAMS]


def configuration_label(run: RunRecord, swept: Sequence[str]) -> str:
    """``freeze=2 model.embedding_layer=pool``: the run's values of the swept params (seeds aside)."""
    return " ".join(f"{p}={run.params.get(p, '–')}" for p in swept) or "all runs"


def replicate_key(run: RunRecord) -> tuple:
    """Which replicate a run is: its values of the seed params (runs of two configurations with the
    same seeds are one replicate of each)."""
    return tuple(run.params.get(param) for param in SEED_PARAMS)
