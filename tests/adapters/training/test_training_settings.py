"""``env.example`` lists every ``TRAINING_*`` variable with its default and help, as the settings object declares
them; every value there is accepted as it stands; a bad value is refused naming the variable."""

from __future__ import annotations

import pytest

from adapters.envsettings import SettingsError
from adapters.training.settings import TrainingSettings, load_training_settings, training_variables
from tests.envdocs import documented_defaults, env_example


def _documented() -> list[tuple[str, str, str]]:
    return env_example("TRAINING_")


def test_env_example_matches_the_settings() -> None:
    declared = training_variables()
    assert all(help_ for _name, _default, help_ in declared), "every variable has a description"
    assert _documented() == declared


def test_env_example_values_are_accepted_as_they_stand() -> None:
    values = {name: default for name, default, _help in _documented()}
    assert load_training_settings(values) == TrainingSettings()


@pytest.mark.parametrize(("name", "value"), [("TRAINING_RUNTIME", "slurm"), ("TRAINING_EVALUATE_ON_SUCCESS", "1"),
                                              ("TRAINING_CPU_ONLY_CPU_LIMIT", "four"),
                                              ("TRAINING_MAX_CONCURRENT_JOBS", "0")])
def test_a_bad_value_is_refused_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        load_training_settings({name: value})


def test_cpu_only_jobs_get_the_cpu_only_limits() -> None:
    s = load_training_settings({"TRAINING_CPU_ONLY_CPU_LIMIT": "3", "TRAINING_CPU_ONLY_MEMORY_LIMIT": "5Gi"})
    cpu = s.resources(False, nodes=2)
    assert (cpu.cpu_limit, cpu.memory_limit, cpu.gpus_per_node, cpu.nodes) == ("3", "5Gi", 0, 2)
    gpu = s.resources(True, gpus_per_node=4)
    assert (gpu.cpu_limit, gpu.gpus_per_node, gpu.gpu_resource) == (s.cpu_limit, 4, "nvidia.com/gpu")


def test_the_configuration_doc_lists_every_variable_with_its_default() -> None:
    section = documented_defaults("## Training: `TRAINING_*`")
    for name, default, _help in training_variables():
        shown = f"`{default}`" if default else "unset"
        assert f"| `{name}` | {shown} |" in section, name
