"""Option parsing shared by several commands."""

from __future__ import annotations

from typing import Any

from eca_deploy.errors import EcaDeployError


def parse_batch(value: str) -> int | None:
    """'dynamic' -> None, 'N' -> N."""
    if value.strip().lower() == "dynamic":
        return None
    try:
        batch = int(value)
    except ValueError:
        raise EcaDeployError(f"--batch must be 'dynamic' or a positive integer, got {value!r}") from None
    if batch < 1:
        raise EcaDeployError(f"--batch must be 'dynamic' or a positive integer, got {value!r}")
    return batch


def parse_k_sizes(value: str | None) -> tuple[int, ...] | None:
    """'3,5,5,7' or '3557' -> (3, 5, 5, 7)."""
    if value is None:
        return None
    parts = value.split(",") if "," in value else list(value)
    try:
        ks = tuple(int(p) for p in parts)
    except ValueError:
        raise EcaDeployError(f"--k-size must be four odd integers such as 3,5,5,7, got {value!r}") from None
    if len(ks) != 4 or any(k < 1 or k % 2 == 0 for k in ks):
        raise EcaDeployError(f"--k-size must be four odd integers such as 3,5,5,7, got {value!r}")
    return ks


def parse_sizes(value: str, option: str = "--batch", example: str = "1,8,32") -> tuple[int, ...]:
    """'1,8,32' -> (1, 8, 32): positive integers, comma-separated."""
    try:
        sizes = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise EcaDeployError(f"{option} takes batch sizes such as {example}, got {value!r}") from None
    if not sizes or any(s < 1 for s in sizes):
        raise EcaDeployError(f"{option} takes positive batch sizes such as {example}, got {value!r}")
    return sizes


RUNTIME_HELP = "What runs an ONNX model: onnxruntime or openvino (CPU; fused models need the ECA extension)."


def runtime_option(default: str = "onnxruntime") -> Any:
    """The shared `--runtime` option of check, bench, run and deploy (validated by `parse_runtime`)."""
    import typer

    return typer.Option(default, "--runtime", help=RUNTIME_HELP)


def parse_runtime(value: str) -> str:
    from eca_deploy.backends.loader import RUNTIMES

    runtime = value.strip().lower()
    if runtime not in RUNTIMES:
        raise EcaDeployError(f"--runtime must be one of {', '.join(RUNTIMES)}, got {value!r}")
    return runtime
