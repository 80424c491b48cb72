from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.harness import CLI, Env


def _worker(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, "worker"], env={**os.environ, **env}, capture_output=True,
                          text=True, timeout=60, check=False)


def test_bad_config_stops_the_worker_at_start_naming_the_key(tmp_path: Path) -> None:
    result = _worker({"FACTORY_PARTITIONS": "lots"})
    assert result.returncode == 2
    assert "invalid configuration FACTORY_PARTITIONS: expected an integer" in result.stderr
    config = tmp_path / "bad.toml"
    config.write_text('[windows]\nsizes = ["1m", "eventually"]\n')
    result = _worker({"FACTORY_CONFIG": str(config)})
    assert result.returncode == 2
    assert "windows.sizes[1]" in result.stderr
    assert "Traceback" not in result.stderr


def test_worker_refuses_input_topics_with_another_partition_count(env: Env) -> None:
    env.create_topics()
    result = _worker({**env.vars(), "FACTORY_PARTITIONS": str(env.partitions + 1)})
    assert result.returncode == 2
    assert f"has {env.partitions} partitions but FACTORY_PARTITIONS is" in result.stderr
