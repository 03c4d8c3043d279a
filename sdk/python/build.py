#!/usr/bin/env python3
"""Builds a Python plugin into a WebAssembly component.

Run from the plugin's folder (its `plugin.toml` does): installs the pinned toolchain
(`requirements-build.txt`) into a project-local virtual environment the first time, then runs
componentize-py against the repository's WIT contract with this SDK on the module path.

    python3 ../../sdk/python/build.py --app app --output ../../target/plugins/python/fraud_check.wasm

With `--dev-runtime` it builds the development runtime instead (`handler_host.dev_runtime`):
one component, shared by every Python plugin, that `host dev` runs a plugin's sources on.
"""

import argparse
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

SDK = Path(__file__).resolve().parent
ROOT = SDK.parent.parent
WIT = ROOT / "wit"
TOOLCHAIN = ROOT / "target" / "python-toolchain"
REQUIREMENTS = SDK / "requirements-build.txt"


def toolchain() -> Path:
    """The toolchain's bin folder, installed (again) when the pinned requirements changed."""
    stamp = TOOLCHAIN / "requirements-build.txt"
    bin_dir = TOOLCHAIN / ("Scripts" if os.name == "nt" else "bin")
    if stamp.is_file() and stamp.read_text() == REQUIREMENTS.read_text():
        return bin_dir
    print(f"installing the Python plugin toolchain into {TOOLCHAIN}", flush=True)
    if TOOLCHAIN.exists():
        shutil.rmtree(TOOLCHAIN)
    venv.create(TOOLCHAIN, with_pip=True)
    subprocess.run(
        [str(bin_dir / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "-r", str(REQUIREMENTS)],
        check=True,
    )
    shutil.copyfile(REQUIREMENTS, stamp)
    return bin_dir


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--app", help="the module that defines `WitWorld`")
    parser.add_argument("--output", help="where to write the component")
    parser.add_argument("--toolchain-only", action="store_true",
                        help="install the pinned toolchain and build nothing")
    parser.add_argument("--dev-runtime", action="store_true",
                        help="build the development runtime that `host dev` runs plugin sources on")
    args = parser.parse_args()
    if args.toolchain_only:
        toolchain()
        return 0
    if not args.output or not (args.app or args.dev_runtime):
        parser.error("--output and one of --app or --dev-runtime are required")
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    # Its own staging file: two hosts may build the shared development runtime at once.
    staging = output.with_name(f"{output.name}.{os.getpid()}.partial")
    # The runtime must not depend on the folder it is built from: every plugin shares it.
    app = ["-p", str(SDK), "handler_host.dev_runtime"] if args.dev_runtime \
        else ["-p", ".", "-p", str(SDK), args.app]
    command = [
        str(toolchain() / "componentize-py"),
        "-d", str(WIT), "-w", "plugin",
        "componentize", *app,
        "-o", str(staging),
    ]
    result = subprocess.run(command)
    if result.returncode != 0:
        return result.returncode
    # Renamed into place whole, so a watching host never loads half a component.
    staging.replace(output)
    print(f"built {output}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
