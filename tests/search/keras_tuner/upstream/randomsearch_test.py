# Adapted copy of KerasTuner's keras_tuner/tuners/randomsearch_test.py
# from https://github.com/keras-team/keras-tuner at commit 417e5b5e8df924d428a3c64007f3ed47bd4c7026
# (v1.4.7 plus a CI-only change, the newest commit of the snapshot of the upstream repository
# available when this copy was made; it had no v1.4.8 tag. They run against the installed
# KerasTuner 1.4.8.)
# Licensed under the Apache License, Version 2.0 (the upstream notice follows).
#
# Changed for poolnas (everything else is upstream's, byte for byte):
#   - KerasTuner's RandomSearchOracle is replaced by poolnas.search.OptunaOracle and its
#     RandomSearch tuner by poolnas.search.OptunaSearch (RandomSearch with OptunaOracle);
#   - imports of KerasTuner's private modules point where the pip package has them
#     (keras_tuner.backend -> keras_tuner.src.backend, keras_tuner.tuners.X ->
#     keras_tuner.src.tuners.X, keras_tuner.distribute -> keras_tuner.src.distribute);
#   - see the `# poolnas:` comments for the few lines changed beyond that.

# Copyright 2019 The KerasTuner Authors
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     https://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.

import numpy as np

from keras_tuner.src.backend import keras
from keras_tuner.engine import tuner as tuner_module
from poolnas.search import OptunaOracle, OptunaSearch  # poolnas


def test_update_space(tmp_path):
    # Tests that HyperParameters added after the first call to `build_model`
    # are sent to the Oracle via oracle.update_space.
    def build_model(hp):
        model = keras.Sequential()
        for i in range(hp.Int("layers", 0, 2)):
            model.add(
                keras.layers.Dense(
                    units=hp.Int(f"units_{str(i)}", 2, 4, 2), activation="relu"
                )
            )

        model.add(keras.layers.Dense(1, activation="sigmoid"))
        model.compile("adam", loss="binary_crossentropy", metrics=["accuracy"])
        return model

    class MyRandomSearch(OptunaOracle):
        def populate_space(self, trial_id):
            result = super().populate_space(trial_id)
            if "values" in result:
                result["values"]["layers"] = 2
            return result

    tuner = tuner_module.Tuner(
        oracle=MyRandomSearch(objective="accuracy", max_trials=1),
        hypermodel=build_model,
        directory=tmp_path,
    )

    assert {hp.name for hp in tuner.oracle.get_space().space} == {"layers"}

    x, y = np.ones((10, 10)), np.ones((10, 1))
    tuner.search(x, y, epochs=1)

    assert {hp.name for hp in tuner.oracle.get_space().space} == {
        "layers",
        "units_0",
        "units_1",
    }


def test_exhausted_search_space(tmp_path):
    class MyTuner(OptunaSearch):
        def run_trial(self, trial, *args, **kwargs):
            hp = trial.hyperparameters
            hp.Boolean("boolean")
            hp.Boolean("boolean2")
            return [np.random.rand()]

    tuner = MyTuner(
        max_trials=15,
        directory=tmp_path,
    )
    tuner.search()
    assert len(tuner.oracle.trials) == 4
