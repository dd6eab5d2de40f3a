"""A re-run of a searched configuration: a confirmation run (new seed, full epochs) or the final fit.

After the search, the study trains its best configurations again (sweep.phases). Such a trial's Tune config is
one RERUN_KEY entry, a Rerun as a dict that holds the source trial's config; the trial driver (trainables.trial.driver)
reads it, trains the configuration with the Rerun's seed and epochs, and tags its MLflow run with its
phase and source trial.

    phase     confirm: the configuration again with a new seed (new init, sampler and augmentation draws; the
              same split) for the whole epoch budget, no early stopping;
              final: trained on train + validation for the epochs its confirmation runs peaked at (median),
              the last epoch's model kept (there is no validation split left to select by)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

RERUN_KEY = "rerun"  # in a re-run's Tune config: Rerun.to_dict()
SOURCE_TAG = "source_run_id"  # on a re-run's MLflow run: the search trial run it re-trains
SOURCE_NAME_TAG = "source_trial"  # ... and that run's name
TRAINED_ON_TAG = "trained_on"  # train | train+val
SEED_PARAM = "seed"  # a re-run's seed, an MLflow param (the search trials use the study's --seed)


@dataclass(frozen=True)
class Rerun:
    phase: str  # confirm | final
    seed: int  # seeds init, sampler and augmentation (RunSettings.seed of this trial)
    epochs: int  # epochs to train, all of them (no early stopping)
    source_run_id: str  # the search trial run whose configuration this is
    source_name: str  # its run name
    config: dict  # its Tune config (searched values under their study names)

    @property
    def name(self) -> str:
        """The run's name in MLflow: what it is and which trial it re-trains."""
        return (
            f"{self.phase}-{self.source_name}-seed{self.seed}"
            if self.phase == "confirm"
            else f"final-{self.source_name}"
        )

    @property
    def train_on_val(self) -> bool:
        return self.phase == "final"

    def tags(self) -> dict[str, str]:
        return {
            SOURCE_TAG: self.source_run_id,
            SOURCE_NAME_TAG: self.source_name,
            TRAINED_ON_TAG: "train+val" if self.train_on_val else "train",
        }

    def settings(self, s):
        """The study's RunSettings as this re-run trains with them."""
        return s.replace(seed=self.seed, max_epochs=self.epochs, early_stopping=False, train_on_val=self.train_on_val)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def split(config: Mapping[str, Any]) -> tuple[dict, Rerun | None]:
    """(the searched values, the Rerun or None) of a trial's Tune config: a search trial's is the values, a
    re-run's is {RERUN_KEY: Rerun.to_dict()}, the values inside."""
    if RERUN_KEY not in config:
        return dict(config), None
    again = Rerun(**config[RERUN_KEY])
    return dict(again.config), again


def run_key(trial_id: str, config: Mapping[str, Any]) -> str:
    """The key a trial's MLflow run is found by (its trial_id tag): Tune's trial id, or a re-run's name, which a
    phase re-created after a crash (new Tune trial ids) gives again, so a finished re-run is never trained twice."""
    again = split(config)[1]
    return again.name if again else trial_id
