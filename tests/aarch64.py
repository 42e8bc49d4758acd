"""An emulated aarch64 Python (the CPU of Jetson and Raspberry Pi boards) for the runtime's ARM check.

Built from Debian's arm64 packages (debootstrap's first stage only: it runs no ARM binary) and the
registry's aarch64 wheels of the runtime's dependencies, then run with qemu-user-static: no
binfmt_misc, no root file system switch, no compile step inside. Cached under
~/.cache/edgevision/aarch64 (EDGEVISION_AARCH64_CACHE), one folder per set of pins, built in a
temporary folder and renamed into place, so a killed build leaves nothing half-made.

ONNX Runtime's cpuinfo reads /proc/cpuinfo and crashes on an x86 host's text under the emulator
(segfault at import, any -cpu); each run therefore sees a plain aarch64 cpuinfo bound over
/proc/cpuinfo inside its own mount namespace (unshare -m: root, as CI runs).
Nothing here times anything: emulated speed says nothing about a board's.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

SUITE = "bookworm"  # Debian 12: Python 3.11, glibc 2.36 (OpenVINO's aarch64 wheel needs 2.35)
MIRROR = os.environ.get("EDGEVISION_DEBIAN_MIRROR", "http://deb.debian.org/debian")
# The runtime's own pins (pyproject.toml's extras), as aarch64 wheels.
WHEELS = ("numpy==2.4.6", "onnxruntime==1.31.1", "openvino==2026.4.1", "opencv-python-headless==4.14.0.94",
          "pillow==13.0.0", "ncnn==1.0.20261020")
PLATFORMS = ("manylinux_2_35_aarch64", "manylinux_2_28_aarch64", "manylinux_2_24_aarch64", "manylinux_2_17_aarch64",
             "manylinux2014_aarch64")
TOOLS = {"qemu-aarch64-static": "qemu-user-static", "debootstrap": "debootstrap", "unshare": "util-linux",
         "dpkg": "dpkg"}
# The emulated CPU: a Cortex-A76 (Raspberry Pi 5; ARMv8.2 with fp16 arithmetic and dot product, no SVE, like
# the Jetson Orin's A78AE). qemu's default 'max' CPU adds SVE/SVE2/SME, and there OpenVINO 2026.4.1's f32
# detection graphs gave other detections than on x86 (none matched), while on an A76 they match x86 exactly:
# a qemu or OpenVINO SVE fault that no board of ours has. Measured, December 2026.
CPU = "cortex-a76"
# What ONNX Runtime's cpuinfo parses instead of the host's x86 text: the same Cortex-A76.
CPUINFO = "".join(
    f"processor\t: {i}\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp "
    "asimdhp cpuid asimdrdm lrcpc dcpop asimddp\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x4\n"
    "CPU part\t: 0xd0b\nCPU revision\t: 1\n\n" for i in range(2))


class Unavailable(Exception):
    """The host cannot emulate aarch64 (a tool is missing, or mount namespaces are not allowed)."""


@dataclass(frozen=True)
class Emulated:
    root: Path  # Debian arm64 file system (the dynamic loader and Python 3.11)
    site: Path  # the aarch64 wheels
    cpuinfo: Path

    def run(self, args: Sequence[str], pythonpath: Sequence[Path] = (), timeout: float = 900,
            env: Optional[dict] = None) -> subprocess.CompletedProcess:
        """Run the emulated python3.11 with args, the wheels and pythonpath importable."""
        qemu = shutil.which("qemu-aarch64-static")
        script = 'mount --bind "$0" /proc/cpuinfo && exec "$@"'
        command = ["unshare", "-m", "sh", "-c", script, str(self.cpuinfo), qemu, "-L", str(self.root),
                   str(self.root / "usr/bin/python3.11"), *args]
        child_env = {"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8", "PYTHONNOUSERSITE": "1", "PYTHONDONTWRITEBYTECODE": "1",
                     "QEMU_CPU": CPU,
                     "PYTHONPATH": os.pathsep.join(map(str, [self.site, *pythonpath])), **(env or {})}
        return subprocess.run(command, env=child_env, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)


def missing_tools() -> list[str]:
    """'tool (Debian package)' for each tool the emulation needs and this host lacks."""
    return [f"{tool} (apt-get install {package})" for tool, package in TOOLS.items() if shutil.which(tool) is None]


def cache_root() -> Path:
    return Path(os.environ.get("EDGEVISION_AARCH64_CACHE", Path.home() / ".cache" / "edgevision" / "aarch64"))


def environment() -> Emulated:
    """The cached environment, built first if it is not there (about a minute and 300 MB of downloads)."""
    missing = missing_tools()
    if missing:
        raise Unavailable("aarch64 emulation needs " + ", ".join(missing))
    key = hashlib.sha256("\n".join([SUITE, MIRROR, *WHEELS, *PLATFORMS, CPUINFO]).encode()).hexdigest()[:12]
    folder = cache_root() / f"{SUITE}-py311-{key}"
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time; the others wait and reuse it
        if not (folder / "ready").is_file():
            _build(folder)
    env = Emulated(folder / "root", folder / "site", folder / "cpuinfo")
    probe = env.run(["-c", "import platform; print(platform.machine())"], timeout=120)
    if probe.returncode != 0 and "unshare" in probe.stderr:
        raise Unavailable(f"aarch64 emulation needs a mount namespace for its cpuinfo (unshare -m): {probe.stderr.strip()}")
    if probe.stdout.strip() != "aarch64":
        raise RuntimeError(f"the emulated Python did not start: {probe.stderr.strip()[-2000:]}")
    return env


def _build(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    work = Path(tempfile.mkdtemp(prefix=".building-", dir=folder.parent))
    try:
        root = work / "root"
        _step(["debootstrap", "--foreign", "--arch=arm64", "--variant=minbase", "--include=python3", SUITE, str(root),
               MIRROR], "debootstrap (Debian's arm64 packages)")
        for deb in sorted((root / "var/cache/apt/archives").glob("*.deb")):  # the first stage left --include unpacked
            _step(["dpkg", "-x", str(deb), str(root)], f"dpkg -x {deb.name}")
        shutil.rmtree(root / "var/cache/apt/archives")
        platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
        _step([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--target", str(work / "site"),
               "--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp", *platforms, *WHEELS],
              "pip install of the aarch64 wheels")
        (work / "cpuinfo").write_text(CPUINFO)
        (work / "ready").write_text("\n".join(WHEELS) + "\n")
        work.rename(folder)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _step(command: list[str], what: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"building the aarch64 environment: {what} failed (exit {done.returncode}): "
                           f"{(done.stderr or done.stdout).strip()[-1500:]}")
