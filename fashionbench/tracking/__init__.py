"""MLflow tracking, by concern. The only package that imports mlflow (``records`` does not).

- ``store``: where runs go (tracking URI, experiment creation) and reading them back;
- ``runs``: one run's lifecycle and logging (``tracked_run``, ``TrackedRun.record``);
- ``run_models``: a run's model, lean: its own weights, the backbone once per experiment; ``load_run_model``;
- ``registry``: registered recommender versions, aliases, and the pyfunc that serves them;
- ``sweep``: the Hydra callback that groups a multirun under a parent run;
- ``records``: runs as plain values, and which of them count and which is best (no mlflow).
"""
