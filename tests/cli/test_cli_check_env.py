"""``lmforge check_env``: the report, and its JSON/YAML dumps."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import yaml
from lmforge.cli.envinfo import KEY_PACKAGES

LMFORGE = str(Path(sys.executable).with_name("lmforge"))


def test_report_names_platform_toolchain_packages_and_plugins(cli):
    result = cli("check_env")
    assert result.exit_code == 0
    out = result.stdout
    for key in ("sys.platform", "Python", "CUDA available", "CUDA_HOME", "NVCC", "GCC", "PyTorch"):
        assert f"\n{key}: " in f"\n{out}", key
    import torch

    assert f"PyTorch: {torch.__version__}\n" in out
    for package in KEY_PACKAGES:
        assert f"\n{package}: " in out, package
    assert "Plugins:\n  builtin (lmforge" in out


def test_dump_json_yaml_and_pickle_round_trip_to_the_same_report(cli, tmp_path):
    for name in ("env.json", "env.yml", "env.yaml", "env.pkl"):
        assert cli("check_env", "--dump-file", str(tmp_path / name)).exit_code == 0
    from_json = json.loads((tmp_path / "env.json").read_text())
    from_yml = yaml.safe_load((tmp_path / "env.yml").read_text())
    assert from_yml == from_json
    assert yaml.safe_load((tmp_path / "env.yaml").read_text()) == from_json
    assert pickle.loads((tmp_path / "env.pkl").read_bytes()) == from_json  # LMDeploy's .pkl
    assert from_json["sys.platform"] == sys.platform
    assert set(from_json["packages"]) == set(KEY_PACKAGES)
    assert from_json["plugins"][0]["name"] == "builtin"
    assert isinstance(from_json["CUDA available"], bool)


def test_unsupported_dump_extension_is_one_sentence_and_exit_2(cli, tmp_path):
    result = cli("check_env", "--dump-file", str(tmp_path / "env.txt"))
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("Error: --dump-file must end in .json, .yml, .yaml, .pkl")
    assert not (tmp_path / "env.txt").exists()


def test_unwritable_dump_file_is_one_sentence_and_exit_1(cli, tmp_path):
    result = cli("check_env", "--dump-file", str(tmp_path / "missing" / "env.json"))
    assert result.exit_code == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("Error: Cannot write --dump-file")


def test_real_process_dumps_json(tmp_path):
    dump = tmp_path / "env.json"
    done = subprocess.run(
        [LMFORGE, "check_env", "--dump-file", str(dump)], capture_output=True, text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(dump.read_text())["lmforge"] in done.stdout

    bad = subprocess.run(
        [LMFORGE, "check_env", "--dump-file", str(tmp_path / "env.toml")], capture_output=True,
        text=True, timeout=60,
    )
    assert bad.returncode == 2
    assert "Traceback" not in bad.stderr
    assert ".json, .yml, .yaml" in bad.stderr
