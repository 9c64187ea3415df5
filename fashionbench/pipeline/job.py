"""A job's config, validated, resolved and fingerprinted once: what ``run`` hands to the pipeline."""

from __future__ import annotations

from dataclasses import dataclass, replace

from omegaconf import DictConfig, OmegaConf

from fashionbench.config import ExperimentConfig, config_node, experiment_config
from fashionbench.pipeline.fingerprints import job_fingerprint


@dataclass(frozen=True)
class Job:
    """One job's experiment: its typed options, its config as logged, and its fingerprint."""

    config: ExperimentConfig  # typed and validated: every schema's range checks have run
    node: DictConfig  # as composed, interpolations kept: what the run logs (config.yaml, params)
    values: dict  # every interpolation resolved, as plain containers: what fingerprints hash
    fingerprint: str  # every option that decides a result (tracking.resume compares it)

    def named(self, run_name: str) -> Job:
        """The same job under another run name (a sweep names each job by its swept values); the name
        decides nothing, so the fingerprint stands."""
        self.node.run_name = run_name
        return replace(self, config=replace(self.config, run_name=run_name),
                       values={**self.values, "run_name": run_name})


def prepare_job(cfg: DictConfig | ExperimentConfig) -> Job:
    """Validate, resolve and fingerprint ``cfg``. Raises the ConfigError (or a source's, an index's,
    a users simulation's) that names the invalid option: nothing has been loaded or started yet."""
    config = experiment_config(cfg)
    node = config_node(cfg)
    values = OmegaConf.to_container(node, resolve=True)
    return Job(config, node, values, job_fingerprint(values))
