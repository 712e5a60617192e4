"""`eca-deploy plugin build` and `eca-deploy plugin info`: the native kernels and TensorRT plugin."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from eca_deploy.cli.app import app
from eca_deploy.cli.commands_plugin_cpu import build_onnxruntime, build_openvino
from eca_deploy.cli.console import console, err_console, warn
from eca_deploy.cli.groups import Force, ImgSize, Json
from eca_deploy.cli.options import JsonOutput, check_at_least, parse_img_size
from eca_deploy.errors import EcaDeployError
from eca_deploy.fileio import allow_replacing, claim_work_dir
from eca_deploy.plugin.build import build_plugins
from eca_deploy.plugin.info import library_info, plugin_route
from eca_deploy.plugin.locate import (
    KERNELS_LIBRARY,
    PLUGIN_LIBRARY,
    PLUGIN_VC_LIBRARY,
    find_kernels_library,
    find_plugin_library,
)
from eca_deploy.plugin.traffic import ELEMENT_BYTES, traffic_markdown, traffic_rows

plugin_app = typer.Typer(
    help="Build and inspect the ECA CUDA kernels (libeca_kernels.so) and TensorRT plugin (libeca_trt_plugin.so).",
    no_args_is_help=True,
)
app.add_typer(plugin_app, name="plugin")


@plugin_app.command("build")
def build_command(
    target: str = typer.Option(
        "tensorrt",
        "--target",
        help="tensorrt (CUDA kernels, TensorRT plugin), openvino (OpenVINO CPU extension) or onnxruntime (ONNX "
        "Runtime CPU custom op).",
    ),
    tensorrt_root: Path | None = typer.Option(
        None, "--tensorrt-root", help="TensorRT install prefix (default: $TENSORRT_ROOT, then the system paths)."
    ),
    cuda_archs: str | None = typer.Option(
        None, "--cuda-archs", help="GPU architectures, e.g. 87 (Orin) or 80,86,90 (default: by CUDA version)."
    ),
    build_dir: Path | None = typer.Option(
        None, "--build-dir", help="Build folder (default: build/plugins; build/<target> for openvino, onnxruntime)."
    ),
    examples: bool = typer.Option(False, "--examples", help="Also build the C++ example eca_infer."),
    jobs: int | None = typer.Option(None, "--jobs", "-j", help="Parallel compile jobs (default: CPU count)."),
) -> None:
    """Build the CUDA kernels, and the TensorRT plugin when TensorRT is found, with CMake (or a --target for CPUs)."""
    check_at_least(jobs, "--jobs")
    if build_dir is not None:  # a new or empty folder, or an earlier build's: never a folder of the user's files
        claim_work_dir(build_dir, "--build-dir", own_signs=("CMakeCache.txt", "eca-build.log"), create=False)
    if tensorrt_root is not None and not tensorrt_root.is_dir():
        raise EcaDeployError(f"--tensorrt-root {tensorrt_root} is not a folder: give TensorRT's install prefix")
    if target == "openvino":
        return build_openvino(build_dir, jobs)
    if target == "onnxruntime":
        return build_onnxruntime(build_dir, jobs)
    if target != "tensorrt":
        raise EcaDeployError(f"--target must be tensorrt, openvino or onnxruntime, got {target!r}")
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn

    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[step]}"))
    with Progress(*columns, console=err_console, transient=True, disable=not err_console.is_terminal) as bar:
        task = bar.add_task("cmake", total=100, step="configuring")

        def progress(line: str, percent: int | None) -> None:
            if percent is not None:
                bar.update(task, completed=percent, step=line.split("] ", 1)[-1][:70])

        result = build_plugins(build_dir, tensorrt_root, cuda_archs, examples, jobs, progress)
    table = Table(title=f"Built in {result.seconds:.0f} s: {result.build_dir}", show_header=False)
    table.add_row("kernels", str(result.kernels))
    table.add_row("TensorRT plugin", str(result.plugin) if result.plugin else f"not built: {result.plugin_skipped}")
    if result.plugin_vc:
        table.add_row("plugin for TensorRT's loader", str(result.plugin_vc))
    if result.example:
        table.add_row("example", str(result.example))
    table.add_row("TensorRT headers", result.tensorrt or "-")
    table.add_row("CUDA architectures", result.cuda_archs)
    console.print(table)
    if result.plugin is None:
        warn(f"no TensorRT plugin: {result.plugin_skipped}")


@plugin_app.command("info")
def info_command(
    paths: list[Path] | None = typer.Argument(
        None, help="Library files or build folders (default: $ECA_DEPLOY_PLUGIN / $ECA_DEPLOY_KERNELS, build/plugins)."
    ),
    json_out: Json = None,
    force: Force = False,
    bytes_out: bool = typer.Option(
        False, "--bytes", help="Instead: bytes each ECA formulation moves per ECA layer of the zoo models."
    ),
    dtype: str = typer.Option("fp16", "--dtype", help="With --bytes: fp16 or fp32."),
    img_size: ImgSize = "224",
) -> None:
    """Show each library's file, checksum and the TensorRT, CUDA and GPU architectures it was built for.

    --bytes: the zoo models' ECA layers at --img-size instead.
    """
    allow_replacing(force)
    if bytes_out:
        _print_traffic(dtype, img_size, JsonOutput.of(json_out))
        return
    json_to = JsonOutput.of(json_out)
    libraries: list[Path] = []
    for path in paths or []:
        if path.is_dir():
            names = (PLUGIN_LIBRARY, PLUGIN_VC_LIBRARY, KERNELS_LIBRARY)
            found = [path / name for name in names if (path / name).is_file()]
            if not found:
                raise EcaDeployError(f"{path} holds neither {PLUGIN_LIBRARY} nor {KERNELS_LIBRARY}")
            libraries += found
        elif path.is_file():
            libraries.append(path)
        else:
            raise EcaDeployError(f"{path} does not exist")
    if not paths:
        plugin = find_plugin_library(required=False)
        vc = plugin.with_name(PLUGIN_VC_LIBRARY) if plugin else None
        libraries = [p for p in (plugin, vc, find_kernels_library(required=False)) if p and p.is_file()]
        if not libraries:
            find_plugin_library()  # raises the one-line error that says where it looked and how to build
        if find_plugin_library(required=False) is None:
            warn(f"{PLUGIN_LIBRARY} not found: it is built only where TensorRT is installed")
    infos = [library_info(p.resolve()) for p in libraries]
    json_to.write([i.as_dict() for i in infos])
    plugins = [p.resolve() for p in libraries if p.name == PLUGIN_LIBRARY]
    route = plugin_route(plugins[0] if plugins else None)
    for info in infos:
        table = Table(title=info.path, show_header=False, title_justify="left")
        table.add_row("size", f"{info.bytes:,} bytes")
        table.add_row("sha256", info.sha256)
        for key, value in info.build.items():
            table.add_row(key, value.replace(",", ", "))
        cubins = ", ".join(info.cubins) if info.cubins is not None else "cuobjdump not found"
        table.add_row("cubins (cuobjdump)", cubins)
        console.print(table)
        if info.error:
            warn(f"{info.path}: no build information: {info.error}")
    console.print(f"TensorRT plugin for this machine: {route}")


def _print_traffic(dtype: str, size: str | None, json_to: JsonOutput) -> None:
    """The byte accounting of docs/plugin.md (native decomposition, plugin, plugin with residual, floor)."""
    if dtype not in ELEMENT_BYTES:
        raise EcaDeployError(f"--dtype {dtype!r}: one of {', '.join(ELEMENT_BYTES)}")
    img_size = parse_img_size(size) or (224, 224)
    if min(img_size) < 32:
        raise EcaDeployError(f"--img-size must be at least 32, got {size}")
    json_to.write(traffic_rows(dtype=dtype, img_size=img_size))
    if not json_to.stdout:
        console.print(traffic_markdown(dtype=dtype, img_size=img_size), markup=False, highlight=False, soft_wrap=True)
