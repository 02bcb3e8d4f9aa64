"""A poolnas study with known values, built trial by trial, for the analysis and report tests.

Two downsampling points. At point 1, trials 0, 1 and 2 differ only in the op (max, conv, avg)
and trials 0 and 3 only in the skip (none, projection); trial 4 is trial 0 again (a duplicate),
trial 5 broke the FLOPs budget and was not trained, trial 6 failed.

====== =============================================== ======== ======= =========
trial  architecture                                    accuracy FLOPs   front
====== =============================================== ======== ======= =========
0      conv3:16x1/max+none:32x1/max+none:64x1           0.90     1.0 M   yes
1      conv3:16x1/conv+none:32x1/max+none:64x1          0.93     2.0 M   yes
2      conv3:16x1/avg+none:32x1/max+none:64x1           0.88     1.0 M   dominated by 0
3      conv3:16x1/max+projection:32x1/max+none:64x1     0.91     1.2 M   yes
4      (duplicate of 0)                                 0.90     1.0 M   no
5      conv3:16x1/conv+projection:32x1/conv+none:64x1   0.00     5.0 M   infeasible
6      failed                                           -        -       -
====== =============================================== ======== ======= =========
"""

from __future__ import annotations

import optuna

from poolnas.spaces import SearchSpace

KEYS = {
    0: "conv3:16x1/max+none:32x1/max+none:64x1",
    1: "conv3:16x1/conv+none:32x1/max+none:64x1",
    2: "conv3:16x1/avg+none:32x1/max+none:64x1",
    3: "conv3:16x1/max+projection:32x1/max+none:64x1",
    5: "conv3:16x1/conv+projection:32x1/conv+none:64x1",
}
BUDGET = 4_000_000
SPACE = SearchSpace(points=2, ops=("max", "avg", "conv"), skips=("none", "projection"),
                    widths=[16, 32, 64])


def known_trials() -> list[optuna.trial.FrozenTrial]:
    """The trials of the table above, in order."""
    complete = optuna.trial.TrialState.COMPLETE

    def make(key: str, accuracy: float, flops: float, **extra) -> optuna.trial.FrozenTrial:
        return optuna.trial.create_trial(
            values=[accuracy, flops],
            user_attrs={"architecture": key, "flops": int(flops), "macs": int(flops) // 2,
                        "params": 1000, **extra},
            constraints={"flops_budget": flops - BUDGET},
            state=complete,
        )

    return [
        make(KEYS[0], 0.90, 1.0e6),
        make(KEYS[1], 0.93, 2.0e6),
        make(KEYS[2], 0.88, 1.0e6),
        make(KEYS[3], 0.91, 1.2e6),
        make(KEYS[0], 0.90, 1.0e6, duplicate_of=0),
        make(KEYS[5], 0.0, 5.0e6, infeasible=f"5000000 FLOPs > budget {BUDGET}"),
        optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL,
                                  user_attrs={"fail_reason": "RuntimeError: diverged"}),
    ]


def settings() -> dict:
    """The ``poolnas`` study attr a search would have written (the parts the report reads)."""
    return {
        "dataset": "digits", "data_options": {},
        "budget": {"epochs": 1, "batch_size": 128, "learning_rate": 0.003, "optimizer": "adam",
                   "repeats": 1, "augment": False},
        "space": SPACE.to_dict(), "input_shape": [8, 8, 1], "num_classes": 10,
        "input_scale": 0.0625, "input_offset": 0.0, "max_flops": BUDGET,
        "reference_flops": 6_000_000,
    }
