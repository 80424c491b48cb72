"""The wheel that `pip install .` (the Docker image) builds holds every module and asset."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("agents", "schemas", "streams")


def test_the_wheel_holds_every_module_schema_and_static_file(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--quiet",
                    "--wheel-dir", str(tmp_path)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("*.whl")
    packed = set(zipfile.ZipFile(wheel).namelist())
    wanted = {path.relative_to(ROOT).as_posix() for package in PACKAGES
              for path in (ROOT / package).rglob("*")
              if path.is_file() and "__pycache__" not in path.parts}
    missing = sorted(wanted - packed)
    print(f"\n{wheel.name}: {len(packed)} files; missing from it: {missing or 'none'}")
    assert not missing
