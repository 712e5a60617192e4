"""`pip install ARGS` into this interpreter's environment, done by uv where uv is installed beside pip.

uv unpacks and links wheels in parallel: the test set-up's torch, torchvision and CUDA libraries (about 5 GB)
install several times faster than with pip. uv does not read pip's configuration, so it is given pip's own
(`pip config list`: indexes, find-links, constraints, certificate, trusted hosts, proxy, timeout), pip's rule
for choosing among indexes (the best version found on any of them), so that both install the same versions, and
pip's compiling of bytecode at install.
pip does the install where uv is missing or fails, and in an environment that sees the system's packages (a
Jetson venv made with --system-site-packages, whose NVIDIA torch pip counts as installed).

    python scripts/pip_install.py -q -c pins.txt -e ".[timm]"
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import subprocess
import sys
from pathlib import Path

# pip's configuration keys that uv takes as options, each value of a space-separated list giving one option.
LIST_OPTIONS = {
    "extra-index-url": "--extra-index-url",
    "find-links": "--find-links",
    "constraint": "-c",
    "trusted-host": "--allow-insecure-host",
}
# pip's configuration keys that uv takes from the environment.
ENV_OPTIONS = {"cert": "SSL_CERT_FILE", "timeout": "UV_HTTP_TIMEOUT", "default-timeout": "UV_HTTP_TIMEOUT"}
# pip's options that uv spells differently.
SPELLING = {"--force-reinstall": "--reinstall"}
# Where a key is set in several places, pip takes the environment over `install.` over `global.`.
PRECEDENCE = ("global", "install", ":env:")


def pip_config(listing: str) -> dict[str, str]:
    """`pip config list` output (`global.find-links='/opt/wheels'`) as {key: value}, by pip's precedence."""
    found: dict[str, dict[str, str]] = {}
    for line in listing.splitlines():
        name, eq, value = line.partition("=")
        section, _, key = name.rpartition(".")
        if not eq or section not in PRECEDENCE:
            continue
        found.setdefault(key, {})[section] = " ".join(shlex.split(value))
    return {key: by[next(s for s in reversed(PRECEDENCE) if s in by)] for key, by in found.items()}


def uv_options(config: dict[str, str], args: list[str]) -> tuple[list[str], dict[str, str]]:
    """uv's options and environment for pip's `config`; `args` given on the command line win over the config."""
    # pip's rule for choosing among indexes, and pip's bytecode at install: without it every process compiles what
    # it imports again where PYTHONDONTWRITEBYTECODE is set (PyTorch's modules: seconds per process).
    options = ["--index-strategy", "unsafe-best-match", "--compile-bytecode"]
    if "index-url" in config and "--index-url" not in args and "-i" not in args:
        options += ["--index-url", config["index-url"]]
    for key, flag in LIST_OPTIONS.items():
        for value in config.get(key, "").split():
            options += [flag, value]
    if config.get("no-index", "").lower() in ("1", "true", "yes", "on"):
        options.append("--no-index")
    env = {ENV_OPTIONS[key]: value for key, value in config.items() if key in ENV_OPTIONS}
    if "proxy" in config:
        env.update(HTTP_PROXY=config["proxy"], HTTPS_PROXY=config["proxy"])
    return options, env


def sees_system_packages() -> bool:
    cfg = Path(sys.prefix) / "pyvenv.cfg"
    return cfg.is_file() and "include-system-site-packages = true" in cfg.read_text().lower()


def main(args: list[str]) -> int:
    pip = [sys.executable, "-m", "pip", "install", *args]
    if importlib.util.find_spec("uv") is None or sees_system_packages():
        return subprocess.call(pip)
    from uv import find_uv_bin

    listing = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
    options, env = uv_options(pip_config(listing), args)
    uv = [find_uv_bin(), "pip", "install", "--python", sys.executable, *options, *(SPELLING.get(a, a) for a in args)]
    code = subprocess.call(uv, env={**os.environ, **env})
    if code == 0:
        return 0
    print(f"note: uv exited {code}; installing with pip instead", file=sys.stderr)
    return subprocess.call(pip)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
