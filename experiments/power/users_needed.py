"""How many simulated users a comparison needs: the paired standard error of the headline
difference between two configurations, against the number of users and the rating protocol.

    python experiments/power/users_needed.py                        # ~6 min on 2 CPU cores
    python experiments/power/users_needed.py --a freeze=2 --b freeze=8 --users 400

Runs configuration A and B of the embedded default once each per protocol with ``--users``
users, then, for the first n users of those runs (which are exactly the users an n-user run
draws: users are drawn one after the other from the users seed), computes the paired
difference of precision@k per (user, category) pair and its standard error from a
user-clustered bootstrap (fashionbench.analysis.stats), and the random -> oracle window. Protocols:
``sample`` (each user rates users.items_per_user shop items, the default) and ``all``
(users.rate_all=true: every user rates every shop item). Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import mlflow  # noqa: E402

from fashionbench.analysis.stats import paired_test  # noqa: E402
from fashionbench.config import compose_config  # noqa: E402
from fashionbench.evaluation.pairs import load_pairs  # noqa: E402
from fashionbench.pipeline.experiment import run_experiment  # noqa: E402


def pairs_of(run_id: str, uri: str, scratch: Path):
    path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="eval/pairs.csv",
                                               dst_path=str(scratch / run_id), tracking_uri=uri)
    return load_pairs(Path(path))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--a", default="freeze=2", help="configuration A's override")
    parser.add_argument("--b", default="freeze=8", help="configuration B's override")
    parser.add_argument("--users", type=int, default=400)
    parser.add_argument("--steps", type=int, nargs="+", default=[50, 100, 200, 300, 400])
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for both configurations")
    args = parser.parse_args()
    print(f"# {os.cpu_count()} CPU cores ({platform.machine()}); A: {args.a}, B: {args.b}; "
          f"overrides: {' '.join(args.overrides) or 'none'}")
    print("| protocol | users | pairs | A − B | paired SE | unpaired SE | SE ratio | random | oracle | window "
          "| run s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as scratch:
        uri = "sqlite:///" + str(Path(scratch) / "mlflow.db")
        for protocol, extra in (("sample", []), ("all", ["users.rate_all=true"])):
            tables, seconds = {}, []
            for name, override in (("a", args.a), ("b", args.b)):
                cfg = compose_config([*args.overrides, override, *extra, f"users.n_users={args.users}",
                                      f"tracking.uri={uri}", "tracking.log_model=false"])
                start = time.perf_counter()
                summary = run_experiment(cfg)
                seconds.append(time.perf_counter() - start)
                tables[name] = pairs_of(summary.run_id, uri, Path(scratch))
            k = int(cfg.eval.k)
            column = f"precision_at_{k}"
            for n in args.steps:
                users = {f"user-{i:04d}" for i in range(n)}
                rows = {name: t[t.user_id.isin(users)] for name, t in tables.items()}
                model = {name: r[r.recommender == "model"].set_index(["user_id", "category"])[column]
                         for name, r in rows.items()}
                joined = model["a"].to_frame("a").join(model["b"].to_frame("b"), how="inner")
                test = paired_test((joined.a - joined.b).to_numpy(), joined.index.get_level_values(0).to_numpy(),
                                   n_resamples=4000)
                paired_se = (test.ci_high - test.ci_low) / 3.92
                unpaired = [paired_test(joined[c].to_numpy(), joined.index.get_level_values(0).to_numpy(),
                                        n_resamples=4000) for c in ("a", "b")]
                unpaired_se = sum(((u.ci_high - u.ci_low) / 3.92) ** 2 for u in unpaired) ** 0.5
                ladder = rows["a"].groupby("recommender")[column].mean()
                print(f"| {protocol} | {n} | {len(joined)} | {test.difference:+.4f} | {paired_se:.4f} | "
                      f"{unpaired_se:.4f} | {paired_se / unpaired_se:.2f} | {ladder['random']:.3f} | "
                      f"{ladder['oracle']:.3f} | {ladder['oracle'] - ladder['random']:.3f} | "
                      f"{sum(seconds) / 2:.0f} |", flush=True)


if __name__ == "__main__":
    main()
