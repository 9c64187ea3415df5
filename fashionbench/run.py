"""``python -m fashionbench.run``: compose the config, check it, run the pipeline, log it all to MLflow.

One experiment is one MLflow run (``pipeline.experiment.run_experiment``: load the catalogue,
fine-tune the classifier, evaluate, embed, index, simulate users, score the model beside the
reference ladder). With ``-m`` every job of the sweep is such a run, nested under the sweep's
parent run (``tracking.sweep_callback.SweepCallback``).

This module only composes and calls: the config is validated, resolved and fingerprinted once
(``pipeline.job``); a sweep's job is named, skipped when its config has a FINISHED run
(``tracking.resume``) or ended as its sweeper expects when it fails (``pipeline.jobs``). TensorFlow
and MLflow are imported only once the config is valid, so ``--help``, ``--cfg job`` and a config
error answer without them. ``--help`` is this module's own (``help_text``): Hydra's lists every
group by composing the config once per group (2.4 s on two cores, most of it copying the schemas)
and counts the schemas as options.
"""

from __future__ import annotations

import logging
import os
import sys

from fashionbench.runtime.console import quiet_tensorflow
from fashionbench.runtime.paths import anchor_path_variables

anchor_path_variables()  # before Keras reads $KERAS_HOME and before Hydra moves a job elsewhere
# MLflow loads after Hydra has set up the job's logging (configs/hydra/job_logging): without this, its
# import would put back a console handler of its own at INFO over the job's config.
os.environ.setdefault("MLFLOW_CONFIGURE_LOGGING", "false")

import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from hydra.types import RunMode  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from fashionbench.config import CONFIG_MODULE, CONFIG_NAME, compose_config, config_groups  # noqa: E402
from fashionbench.pipeline.job import prepare_job  # noqa: E402
from fashionbench.tracking.settings import tracking_settings  # noqa: E402

log = logging.getLogger("fashionbench")
SUBMITIT_JOB = "SUBMITIT_FOLDER"  # set by submitit in each job it runs (hydra/launcher=slurm or local)


def main() -> None:
    """The command: ``--help`` answered here (``help_text``), everything else by Hydra."""
    text = help_text(sys.argv[1:])
    if text is None:
        run()
    else:
        print(text)


@hydra.main(version_base="1.3", config_path=f"pkg://{CONFIG_MODULE}", config_name=CONFIG_NAME)
def run(cfg: DictConfig) -> float | None:
    multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        job = prepare_job(cfg)
    except Exception as error:  # an invalid option, named in the message: no run was started
        message = f"invalid config: {type(error).__name__}: {error}"
        if multirun:  # the other jobs of the sweep may be valid
            from fashionbench.pipeline.jobs import failed_job

            return failed_job(f"{message} (no MLflow run started)")
        sys.exit(f"fashionbench.run: {message}")
    # MLflow and TensorFlow load from here on, once the config is valid: a config error answers without them.
    from fashionbench.pipeline.jobs import failed_job, name_job, skip_finished_job
    from fashionbench.runtime.interrupts import Terminated
    from fashionbench.tracking.runs import disk_full, time_limit

    if multirun:
        x = job.config
        settings = tracking_settings(x.tracking.uri, x.tracking.experiment_name, x.tracking.artifact_location)
        if x.run_name is None:
            # Name each job by its swept values: MLflow draws names from Python's `random`, which
            # the previous job seeded, so generated names would repeat across a sweep.
            job = job.named(name_job(job, settings))
        if x.tracking.resume and (earlier := skip_finished_job(job, settings)) is not None:
            return earlier
    quiet_tensorflow()  # without its start-up messages
    from fashionbench.pipeline.experiment import run_experiment

    try:
        summary = run_experiment(job)
    except (Terminated, KeyboardInterrupt) as interruption:  # the run is marked KILLED
        if multirun and SUBMITIT_JOB in os.environ:  # a scheduler's job (scancel, a time limit), a process of its own
            # Returning lets submitit write the job's result, so the sweep collects its other jobs; an
            # exit here left it without one and the launcher stopped the whole sweep.
            return failed_job(f"job interrupted ({interruption or 'Ctrl-C'}); its MLflow run is marked KILLED")
        sys.exit(f"fashionbench.run: {interruption or 'interrupted'}; the MLflow run is marked KILLED"
                 if isinstance(interruption, Terminated) else 130)
    except Exception as error:
        if multirun and time_limit(error):  # its run is marked KILLED, naming the limit; the next job runs
            return failed_job(f"job cut short by the scheduler's time limit (its MLflow run is marked KILLED): "
                              f"{type(error).__name__}: {error}")
        if multirun:  # a started run is already marked FAILED in MLflow; the next job runs
            return failed_job(f"job failed (its MLflow run, if one started, is marked FAILED): "
                              f"{type(error).__name__}: {error}")
        log.debug("run failed", exc_info=True)
        if disk_full(error):
            first_line = (str(error).strip().splitlines() or [""])[0][:120]
            sys.exit(f"fashionbench.run failed: the disk is full ({type(error).__name__}: {first_line}); its "
                     "partial artifacts were removed and the MLflow run is marked FAILED where the store still "
                     "accepts it (otherwise the next command finds it and marks it KILLED)")
        sys.exit(f"fashionbench.run failed: {type(error).__name__}: {error}")
    print(summary.text())
    return summary.objective


# Flags that may come with --help and leave its answer as help_text gives it; any other flag (a config
# path or name of its own, --hydra-help, --info) goes to Hydra's own help.
_HELP_FLAGS = {"--help", "-h"}
_HELP_COMPANIONS = {"--resolve", "--multirun", "-m", "--run", "-r"}
_HELP_GROUPS_SHOWN = ("hydra/launcher",)  # the Hydra group a sweep picks; the rest: --hydra-help


def help_text(args: list[str]) -> str | None:
    """The answer to ``--help`` with these command-line ``args`` (None without ``--help``, or with a
    flag Hydra's own help must answer): what the command does, the groups and the options each can
    pick, and the config these overrides compose (resolved with ``--resolve``), as Hydra's help has
    it. A bad override is named as a config error is, and the command exits 1."""
    flags = {arg for arg in args if arg.startswith("-")}
    if not flags & _HELP_FLAGS or flags - _HELP_FLAGS - _HELP_COMPANIONS:
        return None
    overrides = [arg for arg in args if not arg.startswith("-")]
    try:
        config = compose_config(overrides)
    except Exception as error:  # Hydra's composition errors name the override
        sys.exit(f"fashionbench.run: invalid config: {type(error).__name__}: {error}")
    groups = {group: options for group, options in config_groups().items()
              if not group.startswith("hydra/") or group in _HELP_GROUPS_SHOWN}
    width = max(map(len, groups))
    return "\n".join([
        "fashionbench.run: one experiment as one MLflow run: load the catalogue, fine-tune ResNet50 on it,",
        "evaluate it, index the shop and score its recommendations beside the reference ladder; with -m,",
        "a sweep of such runs under one parent run.",
        "",
        "  python -m fashionbench.run [group=option ...] [key=value ...]   one run",
        "  python -m fashionbench.run -m freeze=2,4,8 model.seed=0,1,2     a sweep: one run per job",
        "  python -m fashionbench.run --cfg job [overrides]                the composed config, no run",
        "",
        "== Configuration groups ==",
        "Compose your configuration from those groups (group=option)",
        "",
        *(f"{group + ':':<{width + 1}} {', '.join(options)}" for group, options in groups.items()),
        "",
        "== Config ==",
        "Override anything in the config (foo.bar=value)" + (" (these overrides applied)" if overrides else ""),
        "",
        OmegaConf.to_yaml(config, resolve="--resolve" in flags).rstrip(),
        "",
        "What each option does: docs/configuration.md. Hydra's own flags and groups: --hydra-help.",
    ])


if __name__ == "__main__":
    main()
