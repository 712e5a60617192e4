"""`eca-deploy plugin build` and `eca-deploy plugin info`: a real build where nvcc and cmake exist, one-line errors."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

import eca_deploy.cli.commands_plugin  # noqa: F401  (registers `eca-deploy plugin`)
from eca_deploy.errors import EcaDeployError
from eca_deploy.plugin import locate
from eca_deploy.plugin.build import find_nvcc
from tests.conftest import assert_one_line_error


def _have_build_tools() -> bool:
    try:
        find_nvcc()
    except EcaDeployError:
        return False
    return shutil.which("cmake") is not None


def test_info_without_any_library(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(locate, "_REPO", tmp_path)  # an installed package: only ./build/plugins is searched
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(locate.PLUGIN_ENV, raising=False)
    monkeypatch.delenv(locate.KERNELS_ENV, raising=False)
    result = cli("plugin", "info")
    assert_one_line_error(result, "libeca_trt_plugin.so not found", "eca-deploy plugin build", "ECA_DEPLOY_PLUGIN")


def test_info_env_names_a_missing_file(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(locate.PLUGIN_ENV, str(tmp_path / "nope.so"))
    assert_one_line_error(cli("plugin", "info"), "nope.so", "$ECA_DEPLOY_PLUGIN")


def test_env_folder_without_the_plugin_is_not_found_when_optional(tmp_path: Path, monkeypatch) -> None:
    """A kernels-only build (no TensorRT headers) named by $ECA_DEPLOY_PLUGIN: nothing found, not an error."""
    (tmp_path / locate.KERNELS_LIBRARY).write_bytes(b"kernels")
    monkeypatch.setenv(locate.PLUGIN_ENV, str(tmp_path))
    assert locate.find_plugin_library(required=False) is None
    with pytest.raises(EcaDeployError, match=r"libeca_trt_plugin.so not found at .* \(from \$ECA_DEPLOY_PLUGIN\)"):
        locate.find_plugin_library(required=True)
    monkeypatch.setenv(locate.PLUGIN_ENV, str(tmp_path / "nope.so"))  # a named file stays an error
    with pytest.raises(EcaDeployError, match=r"nope\.so"):
        locate.find_plugin_library(required=False)


@pytest.mark.parametrize("where", ["missing", "empty_dir"])
def test_info_bad_path(cli, tmp_path: Path, where: str) -> None:
    target = tmp_path / "missing.so" if where == "missing" else tmp_path
    needle = "does not exist" if where == "missing" else "holds neither"
    assert_one_line_error(cli("plugin", "info", target), needle)


def test_info_not_an_eca_library(cli, tmp_path: Path) -> None:
    fake = tmp_path / "libeca_kernels.so"
    fake.write_bytes(b"not an ELF file")
    result = cli("plugin", "info", fake, "--json")
    assert result.code == 0
    [info] = json.loads(result.stdout)
    assert info["build"] == {} and info["error"] and info["sha256"] == hashlib.sha256(b"not an ELF file").hexdigest()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--cuda-archs", "8.7"], "--cuda-archs"),
        (["--cuda-archs", ","], "--cuda-archs"),
        (["--jobs", "0"], "--jobs"),
        (["--tensorrt-root", "."], "NvInferVersion.h"),
    ],
)
def test_build_bad_options(cli, tmp_path: Path, args: list[str], needle: str) -> None:
    if not _have_build_tools():
        pytest.skip("nvcc or cmake is not installed: the build stops earlier, at the missing tool")
    assert_one_line_error(cli("plugin", "build", "--build-dir", tmp_path / "b", *args), needle)


def test_build_then_info(cli, tmp_path: Path) -> None:
    if not _have_build_tools():
        pytest.skip("nvcc or cmake is not installed")
    build = tmp_path / "build"
    result = cli("plugin", "build", "--build-dir", build, "--cuda-archs", "75", "--jobs", "2")
    assert result.code == 0, result.stderr
    assert "libeca_kernels.so" in result.stdout and (build / "eca-build.log").is_file()

    result = cli("plugin", "info", build, "--json")
    assert result.code == 0, result.stderr
    infos = {Path(i["path"]).name: i for i in json.loads(result.stdout)}
    kernels = infos["libeca_kernels.so"]
    assert kernels["build"]["archs"] == "75" and kernels["error"] is None
    assert kernels["sha256"] == hashlib.sha256((build / "libeca_kernels.so").read_bytes()).hexdigest()
    if "libeca_trt_plugin.so" in infos:  # built where TensorRT headers are installed
        plugin = infos["libeca_trt_plugin.so"]["build"]
        assert plugin["plugin"] == "eca_deploy::ECA/1" and plugin["archs"] == "75"
        assert plugin["registration"] == "load-time"
        assert infos["libeca_trt_plugin_vc.so"]["build"]["registration"] == "loader"
