"""Packaging: built-in recipes (and shipped weights) reach a non-editable install."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_contains_recipes(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True, capture_output=True,
    )
    (wheel,) = tmp_path.glob("audioguide-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    builtin = sorted(p.name for p in (ROOT / "audioguide" / "recipes").glob("*.toml"))
    assert builtin and all(f"audioguide/recipes/{n}" in names for n in builtin)
    assert "audioguide/cli.py" in names and not any(n.startswith("tests/") for n in names)
    shipped = sorted(p.name for p in (ROOT / "audioguide" / "weights").glob("*.safetensors"))
    assert all(f"audioguide/weights/{n}" in names for n in shipped)


@pytest.mark.slow
def test_console_script_runs_from_a_subprocess(tmp_path):
    out = tmp_path / "x.wav"
    res = subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), "tts", "Subprocess run.", "-o", str(out), "--steps", "2"],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    assert out.exists()
    res = subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), "tts", "x", "--recipe", "nope", "-o", str(tmp_path / "y.wav")],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert res.returncode == 2 and res.stderr.strip().startswith("error: unknown recipe") and "Traceback" not in res.stderr
