"""A student's set-up, as the README's *Students* section gives it: the ``student`` extra's pins
(fast), and the recipe followed on a fresh virtual environment (slow).

The slow test copies the repository's files to a temporary folder, creates a fresh virtual
environment there and runs the README's own ``pip install`` line, parsed out of the README so
that the test follows the recipe when the README changes. Then it checks, inside that
environment, what the student gets: ``coursekit`` installed from a wheel (not editable), the
CPU build of the course's torch, JupyterLab, every ``coursekit`` module importable, and the
kernel provisioner's entry point.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from conftest import ROOT

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

COURSE_TORCH = "2.13.0"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def project() -> dict:
    """The ``[project]`` table of pyproject.toml."""
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def student_pins() -> dict[str, str]:
    """``{name: version}`` of the ``student`` extra, each an exact ``==`` pin."""
    pins = {}
    for line in project()["optional-dependencies"]["student"]:
        req = Requirement(line)
        (spec,) = req.specifier
        assert spec.operator == "==", f"the student extra pins each package exactly, got {line!r}"
        pins[req.name.lower()] = spec.version
    return pins


def requirements_pins() -> dict[str, str]:
    """``{name: version}`` of requirements.txt, the course's tested environment."""
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        name, sep, version = line.partition("==")
        if sep:
            pins[name.strip().lower().replace("_", "-")] = version.strip()
    return pins


def readme_recipe() -> list[str]:
    """The lines of the first ``bash`` block of the README's *Students* section."""
    text = (ROOT / "README.md").read_text()
    section = re.search(r"^## Students\n(.*?)(?=^## )", text, re.S | re.M)
    assert section, "README.md has no '## Students' section followed by another section"
    block = re.search(r"^```bash\n(.*?)^```", section.group(1), re.S | re.M)
    assert block, "the README's Students section has no ```bash block: the recipe"
    return block.group(1).splitlines()


def readme_pip_install() -> list[str]:
    """The recipe's ``.venv/bin/pip install ...`` line, as arguments."""
    lines = [line for line in readme_recipe() if line.startswith(".venv/bin/pip install ")]
    assert len(lines) == 1, f"the README's recipe should hold one '.venv/bin/pip install' line, got {lines}"
    return shlex.split(lines[0])


def test_student_extra_pins_are_the_course_pins():
    """The student extra installs what requirements.txt pins (torch, JupyterLab, the kernel, the
    widgets of the progress bars), so students run what the course is tested with."""
    pins, locked = student_pins(), requirements_pins()
    assert pins["torch"] == COURSE_TORCH
    assert {"torch", "jupyterlab", "ipykernel", "ipywidgets"} <= pins.keys()
    for name, version in pins.items():
        assert locked.get(name) == version, (
            f"pyproject.toml's student extra pins {name}=={version}, requirements.txt "
            f"{name}=={locked.get(name)}: make them agree")


def test_core_torch_cannot_pass_the_course_torch():
    """``pip install .`` alone never brings a torch newer than the course's (PyPI's newest would
    be a CUDA build of another version); the course's torch, CPU build included, satisfies it."""
    (torch_req,) = [Requirement(r) for r in project()["dependencies"] if Requirement(r).name == "torch"]
    assert torch_req.specifier.contains(COURSE_TORCH)
    assert torch_req.specifier.contains(f"{COURSE_TORCH}+cpu")
    assert torch_req.specifier.contains("2.2.0")
    for newer in ("2.13.1", "2.14.0", "2.14.1", "3.0.0"):
        assert not torch_req.specifier.contains(newer), f"{torch_req} admits torch {newer}"
    assert Requirement(f"torch=={COURSE_TORCH}").specifier.contains(f"{COURSE_TORCH}+cpu")


def test_readme_recipe_installs_the_student_extra_with_the_cpu_index():
    args = readme_pip_install()
    assert args[:3] == [".venv/bin/pip", "install", ".[student]"]
    assert args[args.index("--extra-index-url") + 1] == CPU_INDEX
    assert "python3 -m venv .venv" in readme_recipe()
    assert any(line.startswith(".venv/bin/jupyter lab") for line in readme_recipe())


def repository_files() -> list[str]:
    """The files a commit of the working tree would hold: tracked ones that still exist, and
    untracked ones that git does not ignore."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         cwd=ROOT, check=True, capture_output=True, text=True).stdout
    return sorted({name for name in out.split("\0") if name and (ROOT / name).is_file()})


CHECKS = textwrap.dedent("""
    import importlib, importlib.metadata as md, json, pathlib, sysconfig
    import coursekit, torch
    package = pathlib.Path(coursekit.__file__).parent
    modules, failed = [], {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        if parts[-1] == "__main__":
            continue
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules.append(name)
        try:
            importlib.import_module(name)
        except Exception as e:
            failed[name] = f"{type(e).__name__}: {e}"
    provisioners = md.entry_points(group="jupyter_client.kernel_provisioners")
    sandbox = [ep for ep in provisioners if ep.name == "coursekit-sandbox"]
    print(json.dumps({
        "file": coursekit.__file__,
        "purelib": sysconfig.get_paths()["purelib"],
        "direct_url": json.loads(md.distribution("coursekit").read_text("direct_url.json") or "{}"),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "versions": {name: md.version(name) for name in NAMES},
        "modules": modules,
        "failed": failed,
        "provisioner": sandbox[0].value if sandbox else None,
        "provisioner_loads": sandbox[0].load().__name__ if sandbox else None,
    }))
""")


@pytest.mark.slow
def test_readme_recipe_on_a_fresh_venv(tmp_path):
    """The README's recipe, followed on a fresh virtual environment, gives a working set-up."""
    course = tmp_path / "course"
    for name in repository_files():
        (course / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, course / name)
    # A fresh environment: nothing of the project's .venv on the paths it runs with.
    env = {k: v for k, v in os.environ.items()
           if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if Path(p).resolve() != Path(sys.executable).parent.resolve())
    env["PYTHONNOUSERSITE"] = "1"

    started = time.perf_counter()
    # The recipe's `python3 -m venv .venv`, with the interpreter the course's tests run on.
    subprocess.run([sys.executable, "-m", "venv", ".venv"], cwd=course, env=env, check=True)
    venv_created = time.perf_counter()
    args = readme_pip_install()
    # Without the recipe's `--extra-index-url https://download.pytorch.org/whl/cpu`: the test
    # machines cannot reach download.pytorch.org, and their pip (its configuration's local
    # find-links) installs torch 2.13.0+cpu from a local wheel. The checks below require the
    # CPU build all the same.
    i = args.index("--extra-index-url")
    del args[i:i + 2]
    # --no-compile: pip does not byte-compile the ~100 packages (torch's thousands of modules
    # above all), most of the install's time on 2 cores; the files installed are the same, and
    # the imports below compile what they use.
    args.append("--no-compile")
    pins = student_pins()
    probe = subprocess.run([args[0], "download", "--no-deps", "--retries", "0", "--timeout", "15",
                            "--dest", str(tmp_path / "probe"), f"jupyterlab=={pins['jupyterlab']}"],
                           cwd=course, env=env, capture_output=True, text=True)
    if probe.returncode != 0:  # the recipe needs a package index; the rest of the suite does not
        pytest.skip(f"no package index serves jupyterlab=={pins['jupyterlab']} (offline?): "
                    f"{(probe.stderr.strip().splitlines() or [''])[-1]}")
    install = subprocess.run(args, cwd=course, env=env, capture_output=True, text=True)
    installed = time.perf_counter()
    assert install.returncode == 0, f"{shlex.join(args)} failed:\n{install.stdout[-3000:]}\n{install.stderr[-3000:]}"

    python = course / ".venv" / "bin" / "python"
    script = f"NAMES = {sorted(pins)!r}\n" + CHECKS
    run = subprocess.run([str(python), "-c", script], cwd=tmp_path, env=env,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    found = json.loads(run.stdout.splitlines()[-1])
    lab = subprocess.run([str(course / ".venv" / "bin" / "jupyter"), "lab", "--version"],
                         cwd=tmp_path, env=env, capture_output=True, text=True)
    finished = time.perf_counter()
    print(f"\nstudent set-up: venv {venv_created - started:.1f} s, pip install {installed - venv_created:.1f} s, "
          f"checks {finished - installed:.1f} s, total {finished - started:.1f} s")

    # coursekit from a wheel built from the copy, not an editable install of it
    purelib = Path(found["purelib"]).resolve()
    assert Path(found["file"]).resolve().is_relative_to(purelib), \
        f"coursekit was imported from {found['file']}, not from the venv's {purelib}"
    assert not found["direct_url"].get("dir_info", {}).get("editable", False), found["direct_url"]
    # the course's torch, CPU build
    assert Version(found["torch"]).public == COURSE_TORCH, f"torch {found['torch']} installed, not {COURSE_TORCH}"
    assert found["cuda"] is None, f"a CUDA build of torch was installed (CUDA {found['cuda']})"
    assert {name: Version(v).public for name, v in found["versions"].items()} == pins
    # JupyterLab runs
    assert lab.returncode == 0, lab.stderr[-3000:]
    assert lab.stdout.strip() == pins["jupyterlab"], lab.stdout
    # every module of the package imports, and the sandbox's kernel provisioner is declared
    assert "coursekit.classroom.sandbox" in found["modules"], found["modules"]
    assert not found["failed"], f"coursekit modules that do not import: {found['failed']}"
    assert found["provisioner"] == "coursekit.classroom.sandbox:SandboxProvisioner"
    assert found["provisioner_loads"] == "SandboxProvisioner"
