"""Set up a Colab session for the course: install what Colab lacks, keep its torch, restart once if needed.

Every notebook's first cell runs it on Colab, after cloning the course into /content/finetuning-course:

    %run finetuning-course/scripts/colab_setup.py --drive={KEEP_RUNS_ON_DRIVE}

1. Installs the pins of requirements-colab.txt that are missing or at another version, with this interpreter's pip
   and torch (torchvision, torchaudio) held at Colab's versions. Nothing to install: no pip call at all.
2. Uninstalls torchao when it is older than peft accepts (Colab ships 0.10.0; peft then refuses every LoRA layer).
3. Makes the course importable now and after a restart (a .pth file in site-packages).
4. --drive=True: mounts Google Drive and keeps runs/ there (COURSE_RUNS_DIR); else runs/ stays on this VM.
5. If pip replaced a package this kernel had already imported (Colab imports pandas, pyarrow, matplotlib at start),
   the kernel now mixes old and new code: it says so and restarts the session. Run the notebook again from the
   top; the second run installs nothing and goes straight on.

Standard library only: it runs before anything is installed.
"""

import argparse
import importlib
import importlib.metadata
import os
import re
import signal
import site
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

COURSE = Path(os.path.abspath(__file__)).parents[1]  # abspath, not resolve: keep the folder name the user sees
REQUIREMENTS = COURSE / "requirements-colab.txt"
PTH_NAME = "finetuning-course.pth"
TORCH = ("torch", "torchvision", "torchaudio")  # Colab's builds match its GPU driver: never replaced
# peft's TORCHAO_MINIMUM_VERSION (peft/import_utils.py, is_torchao_available): with an older torchao installed, peft
# raises "Found an incompatible version of torchao" for every LoRA target that is not a bitsandbytes layer.
TORCHAO_MINIMUM = "0.16.0"
DRIVE = "/content/drive"
DRIVE_RUNS = DRIVE + "/MyDrive/finetuning-course/runs"


# --------------------------------------------------------------------------------------------- what to do
def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_pins(path: Path = REQUIREMENTS) -> dict[str, str]:
    """name -> version of every `name==version` line (comments and blank lines skipped)."""
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, sep, version = line.partition("==")
            if not sep:
                raise ValueError(f"{path.name}: not an exact pin: {line!r}")
            pins[name.strip()] = version.strip()
    return pins


def installed_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def to_install(pins: dict[str, str], installed: dict[str, str | None]) -> list[str]:
    """The pins whose package is missing or at another version, as pip requirements."""
    return [f"{name}=={version}" for name, version in pins.items() if installed.get(name) != version]


def version_tuple(version: str) -> tuple:
    """'0.16.0' -> (0, 16, 0, 1); a pre-release ('0.16.0.dev1', '0.16.0rc1') sorts below its release."""
    release = re.match(r"\d+(\.\d+)*", version)
    numbers = tuple(int(n) for n in release.group(0).split(".")) if release else (0,)
    numbers = (numbers + (0, 0, 0))[:3]
    final = 0 if re.search(r"(a|b|rc|dev|alpha|beta|pre)\d*", version[release.end():] if release else "") else 1
    return numbers + (final,)


def torchao_too_old(version: str | None, minimum: str = TORCHAO_MINIMUM) -> bool:
    return version is not None and version_tuple(version) < version_tuple(minimum)


def constraints(pins: dict[str, str], installed: dict[str, str | None]) -> list[str]:
    """Hold torch (and torchvision, torchaudio) at their installed builds, and every course pin at its version."""
    held = [f"{name}=={installed[name]}" for name in TORCH if installed.get(name)]
    return held + [f"{name}=={version}" for name, version in pins.items()]


# --------------------------------------------------------------------------------------------- what changed
def distributions() -> dict[str, str]:
    """normalized name -> version of every installed distribution."""
    found = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            found.setdefault(normalize(name), dist.version)  # first on sys.path wins, as for imports
    return found


def changes(before: dict[str, str], after: dict[str, str]) -> dict[str, tuple]:
    """name -> (old version or None, new version or None) for every distribution that was added, changed or removed."""
    return {name: (before.get(name), after.get(name)) for name in sorted(before.keys() | after.keys())
            if before.get(name) != after.get(name)}


def top_level_modules(name: str) -> set[str]:
    """The importable top-level names a distribution provides (from top_level.txt, else its file list)."""
    guess = {normalize(name).replace("-", "_")}
    try:
        dist = importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return guess  # removed: its import name is almost always its own name
    listed = dist.read_text("top_level.txt")
    if listed:
        return {line.strip() for line in listed.splitlines() if line.strip()}
    modules = set()
    for file in dist.files or []:
        top = file.parts[0]
        if top in ("..", "__pycache__") or top.endswith((".dist-info", ".egg-info", ".data", ".pth")):
            continue
        modules.add(top[:-3] if top.endswith(".py") else top.split(".")[0])
    return modules or guess


def loaded_changes(changed: dict[str, tuple], modules=None, top_level=top_level_modules) -> dict[str, tuple]:
    """The changed distributions that this kernel had imported before the change (their old code is in memory)."""
    modules = sys.modules if modules is None else modules
    return {name: versions for name, versions in changed.items()
            if versions[0] is not None and any(m in modules for m in top_level(name))}


# --------------------------------------------------------------------------------------------- doing it
def pip(*args: str) -> list[str]:
    """Run this interpreter's pip; show only the lines that matter (Colab offers its restart button on pip's
    "Successfully installed" line). Returns all of pip's output lines; raises if pip fails."""
    command = [sys.executable, "-m", "pip", *args, "--progress-bar", "off"] if args[0] == "install" else \
        [sys.executable, "-m", "pip", *args]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines, conflicts = [], False
    for line in process.stdout:
        line = line.rstrip()
        lines.append(line)
        conflicts = conflicts or line.startswith("ERROR: pip's dependency resolver")
        if line.startswith(("Successfully installed", "ERROR:")) or (conflicts and line):
            print(line, flush=True)
    if process.wait() != 0:
        print("\n".join(lines[-30:]))
        raise RuntimeError(f"pip {args[0]} failed (exit {process.returncode}); its last lines are above")
    if conflicts:
        print("(Those are other packages Colab preinstalled; the course's libraries and what they need agree.)")
    return lines


def install(requirements: list[str], held: list[str]) -> None:
    with tempfile.NamedTemporaryFile("w", suffix="-constraints.txt", delete=False) as file:
        file.write("\n".join(held) + "\n")
    try:
        # --no-compile: byte-compiling every file of transformers & co. takes longer than the download on 2 cores;
        # Python compiles the modules a notebook imports when it first imports them
        pip("install", *requirements, "--constraint", file.name, "--no-compile")
    finally:
        os.unlink(file.name)


def site_packages() -> Path:
    dirs = site.getsitepackages() if hasattr(site, "getsitepackages") else []
    return Path(dirs[0] if dirs else sysconfig.get_paths()["purelib"])


def add_course_to_path(course: Path = COURSE, site_dir: Path | None = None) -> Path:
    """Import the course from now on, and after a restart too (a .pth file: one folder per line)."""
    if str(course) not in sys.path:
        sys.path.insert(0, str(course))
    pth = (site_dir or site_packages()) / PTH_NAME
    if not pth.exists() or pth.read_text() != f"{course}\n":
        pth.write_text(f"{course}\n")
    return pth


def runs_on_drive(keep: bool, on_colab: bool, mount=None, drive_runs: str = DRIVE_RUNS) -> str | None:
    """--drive=True on Colab: mount Drive, set COURSE_RUNS_DIR to a folder on it and return it; else None."""
    if not keep:
        return None
    if not on_colab:
        print("KEEP_RUNS_ON_DRIVE works on Colab only; runs/ stays where it is.")
        return None
    if mount is None:
        from google.colab import drive  # Colab's own package

        mount = drive.mount
    mount(DRIVE)
    Path(drive_runs).mkdir(parents=True, exist_ok=True)
    os.environ["COURSE_RUNS_DIR"] = drive_runs
    return drive_runs


def restart_session(stale: dict[str, tuple], kill=os.kill) -> None:
    """This kernel holds old code of packages pip just replaced: say so, then end the kernel (Colab restarts it)."""
    names = ", ".join(f"{name} {old} -> {new or 'removed'}" for name, (old, new) in stale.items())
    print(f"\nThis session had already imported packages that pip has just replaced ({names}); mixing their old "
          "and new code would fail later, so the session restarts now (Colab reconnects by itself).\n"
          "Then run the notebook again from the top (Runtime > Run all): the setup finds everything installed and "
          "goes straight on.", flush=True)
    sys.stderr.flush()
    time.sleep(1)  # let the kernel send this output before it dies
    kill(os.getpid(), signal.SIGKILL)


def summary(changed: dict[str, tuple], kept: list[str]) -> list[str]:
    """Short lines: what was installed (old -> new), what was removed, what was kept."""
    installed = [f"{n} {old} -> {new}" if old else f"{n} {new}" for n, (old, new) in changed.items() if new]
    removed = [f"{n} {old}" for n, (old, new) in changed.items() if not new]
    lines = [f"Installed: {', '.join(installed)}"] if installed else []
    lines += [f"Removed: {', '.join(removed)}"] if removed else []
    return lines + ([f"Kept: {', '.join(kept)}"] if kept else [])


def parse_args(argv):
    parser = argparse.ArgumentParser(description="Set up a Colab session for the course.")
    parser.add_argument("--drive", default="False", choices=["True", "False"],
                        help="True: mount Google Drive and keep runs/ there (KEEP_RUNS_ON_DRIVE in the notebook)")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    start = time.time()
    on_colab = "google.colab" in sys.modules
    add_course_to_path()
    pins = read_pins()
    installed = {name: installed_version(name) for name in [*pins, *TORCH, "torchao"]}
    missing = to_install(pins, installed)
    old_torchao = torchao_too_old(installed["torchao"])
    stale = {}
    if missing or old_torchao:
        before = distributions()
        if missing:
            print(f"Installing {len(missing)} of the course's {len(pins)} pinned libraries with pip "
                  f"(about a minute): {', '.join(missing)}", flush=True)
            install(missing, constraints(pins, installed))
        if old_torchao:
            print(f"Removing torchao {installed['torchao']}: peft {installed_version('peft')} refuses every LoRA "
                  f"layer next to a torchao older than {TORCHAO_MINIMUM}, and the course does not use torchao.")
            pip("uninstall", "-y", "torchao")
        importlib.invalidate_caches()
        changed = changes(before, distributions())
        kept = [f"{name} {installed[name]}" for name in TORCH if installed[name]]
        kept += [f"{name} {version}" for name, version in pins.items() if installed[name] == version]
        print("\n".join(summary(changed, kept)))
        stale = loaded_changes(changed)
    if stale:
        restart_session(stale)
        return
    runs = runs_on_drive(args.drive == "True", on_colab)
    if runs:
        print(f"Runs (records, adapters, checkpoints) go to your Google Drive: {runs}")
        if "helpers.tracking" in sys.modules:
            print("helpers was imported before this cell: restart the session (Runtime > Restart session) and run "
                  "the notebook again so that it writes there.")
    else:
        where = os.environ.get("COURSE_RUNS_DIR", str(COURSE / "runs"))
        print(f"runs/ ({where}) lives on this VM only and goes when Colab recycles it; to keep it, set "
              "KEEP_RUNS_ON_DRIVE = True in this cell.")
    torch = f"torch {installed['torch']}" if installed["torch"] else "no torch"
    print(f"Setup done in {time.time() - start:.1f} s: the course's libraries at their pinned versions, {torch} "
          "(this runtime's own).")


if __name__ == "__main__":
    main()
