"""scripts/pip_install.py: uv gets pip's configuration, so both install the same versions from the same places."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("pip_install", ROOT / "scripts" / "pip_install.py")
pip_install = importlib.util.module_from_spec(spec)
spec.loader.exec_module(pip_install)

LISTING = """\
:env:.cert='/etc/ssl/certs/ca.crt'
:env:.find-links='/env/wheels'
global.cert='/global/ca.crt'
global.constraint='/etc/xdg/pip/constraints.txt'
global.extra-index-url='file:///opt/pypi/simple file:///opt/pypi-more/simple'
global.find-links='/global/wheels'
global.index-url='https://mirror.example/simple'
install.trusted-host='mirror.example'
global.disable-pip-version-check='1'
not a setting
"""


def test_config_takes_pips_precedence_environment_over_install_over_global() -> None:
    config = pip_install.pip_config(LISTING)
    assert config["cert"] == "/etc/ssl/certs/ca.crt"  # PIP_CERT over pip.conf
    assert config["find-links"] == "/env/wheels"
    assert config["extra-index-url"] == "file:///opt/pypi/simple file:///opt/pypi-more/simple"
    assert config["trusted-host"] == "mirror.example"
    assert "not a setting" not in " ".join(config)


def test_uv_gets_every_index_constraint_and_certificate() -> None:
    options, env = pip_install.uv_options(pip_install.pip_config(LISTING), ["-q", "torch==2.14.1"])
    assert "--compile-bytecode" in options  # as pip does at install
    options = [o for o in options if o != "--compile-bytecode"]
    pairs = list(zip(options[::2], options[1::2], strict=True))
    assert ("--index-strategy", "unsafe-best-match") in pairs  # pip's rule: the best version on any index
    assert ("--index-url", "https://mirror.example/simple") in pairs
    assert ("--extra-index-url", "file:///opt/pypi/simple") in pairs
    assert ("--extra-index-url", "file:///opt/pypi-more/simple") in pairs
    assert ("--find-links", "/env/wheels") in pairs and ("--find-links", "/global/wheels") not in pairs
    assert ("-c", "/etc/xdg/pip/constraints.txt") in pairs
    assert ("--allow-insecure-host", "mirror.example") in pairs
    assert env == {"SSL_CERT_FILE": "/etc/ssl/certs/ca.crt"}


def test_the_command_lines_index_wins_over_the_configured_one() -> None:
    options, _ = pip_install.uv_options(pip_install.pip_config(LISTING), ["--index-url", "https://cpu.example", "x"])
    assert "https://mirror.example/simple" not in options


def test_this_environments_own_configuration_parses() -> None:
    listing = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
    config = pip_install.pip_config(listing)
    options, _ = pip_install.uv_options(config, [])
    for value in config.get("find-links", "").split() + config.get("extra-index-url", "").split():
        assert value in options
