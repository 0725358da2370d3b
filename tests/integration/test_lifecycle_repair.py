"""A training killed (SIGKILL, real processes) mid-lifecycle is repaired by the next training."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

from mlflow.tracking import MlflowClient

from readmit.pipeline.train import train

# Runs the real `train` in a child process and SIGKILLs it at the chosen lifecycle point
# (without its own repair step, so both killed runs are left for the test's next training).
KILLED_TRAINING = textwrap.dedent(
    """
    import os, signal, sys
    import readmit.pipeline.train as train_module
    from readmit import registry
    from readmit.settings import Settings

    def die(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

    train_module.repair = lambda settings: []  # leave the other killed run for the test

    if sys.argv[1] == "registered":  # the version exists, nothing is decided yet
        train_module.compare_and_promote = die
    elif sys.argv[1] == "decided":  # decided to promote, @production not moved yet
        registry.promote = die
    else:  # @production moved, the previous holder not archived yet
        stage = registry._stage
        def stage_or_die(client, name, version, to):
            if to == "Archived":
                die()
            stage(client, name, version, to)
        registry._stage = stage_or_die
    train_module.train(Settings(), max_rounds=30, bootstrap_rounds=20)
    """
)


def _kill_training_at(point: str, env: dict[str, str]) -> None:
    done = subprocess.run(
        [sys.executable, "-c", KILLED_TRAINING, point],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]


def test_the_next_training_repairs_what_killed_trainings_left(small_build, tmp_path):
    settings = small_build.settings.model_copy(
        update={
            "mlflow_tracking_uri": f"sqlite:///{tmp_path}/mlflow.db",
            "model_name": "readmission_repair",
        }
    )
    env = {
        **os.environ,
        "READMIT_DATA_DIR": str(settings.data_dir),
        "MLFLOW_TRACKING_URI": settings.resolved_tracking_uri,
        "READMIT_MODEL_NAME": settings.model_name,
        "READMIT_PROMOTE_MIN_DELTA": "-1",
    }
    first = train(settings, max_rounds=30, bootstrap_rounds=20)
    assert first.decision.promoted
    _kill_training_at("alias_moved", env)
    _kill_training_at("registered", env)
    _kill_training_at("decided", env)

    client = MlflowClient(settings.resolved_tracking_uri)
    name = settings.model_name
    found = client.search_model_versions(f"name='{name}'")
    stages = {str(v.version): v.current_stage for v in found}
    assert stages == {"1": "Production", "2": "Production", "3": "Staging", "4": "Staging"}
    experiment = client.get_experiment_by_name(settings.experiment_name).experiment_id
    running = client.search_runs([experiment], "attributes.status = 'RUNNING'")
    assert len(running) >= 3  # the killed parents (and the children they had open)
    assert client.get_model_version(name, "4").tags["readmit.decision"] == "promoted"

    lines: list[str] = []
    after = train(settings, max_rounds=30, bootstrap_rounds=20, report=lines.append)
    repaired = [line for line in lines if line.startswith("repaired: ")]
    assert any("v1 archived" in line for line in repaired), lines
    assert any("v3 abandoned" in line for line in repaired), lines
    assert any("v4 abandoned" in line for line in repaired), lines

    assert client.search_runs([experiment], "attributes.status = 'RUNNING'") == []
    for run in running:
        killed = client.get_run(run.info.run_id)
        assert killed.info.status == "KILLED"
        assert "is gone" in killed.data.tags["readmit.repaired"]
    versions = {str(v.version): v for v in client.search_model_versions(f"name='{name}'")}
    production = str(client.get_model_version_by_alias(name, "production").version)
    in_production = [n for n, v in versions.items() if v.current_stage == "Production"]
    assert in_production == [production]
    assert production in ("2", after.version)
    assert versions["1"].current_stage == "Archived"
    assert versions["3"].current_stage == "Archived"
    assert versions["3"].tags["readmit.decision"] == "abandoned"
    assert "ended KILLED before a decision" in versions["3"].tags["readmit.decision_reason"]
    assert versions["4"].current_stage == "Archived"
    assert versions["4"].tags["readmit.decision"] == "abandoned"
    assert "before the promotion landed" in versions["4"].tags["readmit.decision_reason"]
