"""Assemble a runtime bundle: one folder that loads and runs .dyc artifacts where no compiler is
installed. It holds TVM's runtime library (libtvm_runtime.so, + libtvm_runtime_cuda.so and the
libcudart it needs; never libtvm_compiler.so), the `tvm_ffi` package, IREE's runtime (`iree.runtime`,
never `iree.compiler`), ml_dtypes, typing_extensions and the runtime modules of `compiler`; where it
runs, only Python and numpy must be installed: this Python's version, or the one --python names (the
packages with extension modules then come from their wheels for that version, through pip download).

    python -m compiler.tools.runtime_bundle [-o out/runtime-bundle] [--max-mb 40] [--python 3.12]
                                                                                  (make runtime-bundle)
    PYTHONPATH=out/runtime-bundle python -c "from compiler.runtime import load; print(load('m.dyc').run(x))"

The folder is built beside the output and moved into place only when it is within --max-mb.
"""
from __future__ import annotations

import argparse
import ast
import importlib.util
import re
import shutil
import subprocess
import sys
import tempfile
from importlib.metadata import distribution
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# our modules the load/run path imports (compiler/runtime.py's closure; the backends' runtime loaders)
RUNTIME_MODULES = ("compiler/runtime.py", "compiler/diagnostics.py", "compiler/ir.py", "compiler/target.py",
                   "compiler/types.py", "compiler/version.py", "compiler/host.py",
                   "compiler/backends/__init__.py", "compiler/backends/tvm_runtime.py",
                   "compiler/backends/mlir_runtime.py")
# the bundle's own package init: the compiler's imports the whole pipeline
INIT = '''"""dyc's runtime, from a runtime bundle (compiler/tools/runtime_bundle.py): load and run
.dyc artifacts with TVM's runtime library and IREE's runtime; the compilers are not here.

    from compiler.runtime import load
    outputs = load("model.dyc").run(x)
"""
from compiler.diagnostics import ArtifactError, CompileError, InvalidInput, Unsupported
from compiler.runtime import CompiledModel, load
from compiler.target import Target
from compiler.version import __version__

__all__ = ["load", "CompiledModel", "Target", "CompileError", "InvalidInput", "Unsupported", "ArtifactError",
           "__version__"]
'''
README = """dyc runtime bundle: loads and runs .dyc artifacts (tvm and mlir backends, llvm and cuda
targets) with no compiler installed. Needs Python {py} and numpy; cuda artifacts an NVIDIA driver
for CUDA 13. Usage:

    PYTHONPATH={name} python -c "from compiler.runtime import load; import numpy as np; \\
        m = load('model.dyc'); print(m.run(*[np.zeros(t.shape, t.dtype.numpy) for _, t in m.signature.inputs]))"

A tvm cuda artifact holds CUDA C; its kernels come from $DYC_CUDA_CACHE (see
compiler/backends/tvm_runtime.py) or from nvcc when it is on PATH.
"""
_SKIP_DIRS = {"__pycache__", "3rdparty", "include", "src", "share", "cython", "cmake", "lib", "tests"}


# the packages with extension modules (one build per Python version): import name -> distribution
EXTENSION_PACKAGES = {"tvm_ffi": "apache-tvm-ffi", "iree": "iree-base-runtime", "ml_dtypes": "ml_dtypes"}
WHEEL_PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
                   "manylinux2014_x86_64")


def fetch_wheels(python: str, site: Path) -> Path:
    """EXTENSION_PACKAGES at their installed versions, built for CPython `python` ("3.12"), downloaded
    with pip and unpacked into `site`; returns `site`."""
    import zipfile
    wheels = site.parent / f"{site.name}-wheels"
    for dist in EXTENSION_PACKAGES.values():
        try:
            version = distribution(dist).version
        except Exception:  # noqa: BLE001  (an optional one, iree-base-runtime, not installed)
            continue
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
               "--python-version", python, "--implementation", "cp", "-d", str(wheels), f"{dist}=={version}"]
        for plat in WHEEL_PLATFORMS:
            cmd += ["--platform", plat]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise SystemExit(f"runtime bundle: no {dist}=={version} wheel for Python {python}: {last}")
    for whl in wheels.glob("*.whl"):
        with zipfile.ZipFile(whl) as z:
            z.extractall(site)
    return site


def _package_dir(name: str, site: Path | None = None) -> Path:
    """Where a top-level package lives: in `site` (unpacked wheels) for EXTENSION_PACKAGES when given,
    else where it is installed here, found without importing it."""
    if site is not None and name in EXTENSION_PACKAGES:
        if not (site / name).is_dir():
            raise SystemExit(f"runtime bundle: {name} is not among the wheels fetched into {site}")
        return site / name
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"runtime bundle: the package {name!r} is not installed here "
                         "(pip install -e '.[dev]')")
    return Path(next(iter(spec.submodule_search_locations)))


def _copy_python(src: Path, dst: Path, extra: tuple[str, ...] = ()) -> None:
    """The .py files of package `src` (and files named in `extra`, relative to it) into `dst`."""
    for f in src.rglob("*.py"):
        rel = f.relative_to(src)
        if not _SKIP_DIRS & set(rel.parts[:-1]):
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, dst / rel)
    for name in extra:
        for f in src.glob(name):
            (dst / f.relative_to(src)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, dst / f.relative_to(src))


def _needed_library(lib: Path, soname_prefix: str) -> Path | None:
    """The file the dynamic loader resolves `lib`'s dependency `soname_prefix*` to (ldd), if any."""
    out = subprocess.run(["ldd", str(lib)], capture_output=True, text=True, check=False).stdout
    m = re.search(rf"^\s*({re.escape(soname_prefix)}\S*) => (/\S+)", out, re.MULTILINE)
    return Path(m.group(2)) if m else None


def _dist_metadata(dst: Path, dist_name: str, summary: str) -> None:
    """A dist-info with the installed distribution's name and version: compiler.runtime.versions()
    checks them against the artifact's manifest."""
    dist = distribution(dist_name)
    info = dst / f"{dist.metadata['Name'].replace('-', '_')}-{dist.version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist.metadata['Name']}\n"
                                   f"Version: {dist.version}\nSummary: {summary}\n")


def check_imports(bundle: Path) -> None:
    """Every module-level `compiler.*` import of the bundled modules is bundled (lazy, in-function
    imports are the compile-time features a runtime leaves out)."""
    for f in (bundle / "compiler").rglob("*.py"):
        for node in ast.parse(f.read_text()).body:
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            for name in names:
                path = bundle / name.replace(".", "/")
                bundled = path.with_suffix(".py").exists() or (path / "__init__.py").exists()
                if name.split(".")[0] == "compiler" and not bundled:
                    raise SystemExit(f"runtime bundle: {f.relative_to(bundle)} imports {name}, which is not "
                                     "bundled; add it to RUNTIME_MODULES or import it where it is used")


def build(dst: Path, python: str | None = None) -> None:
    """Fill the empty folder `dst` with the bundle, for CPython `python` ("3.12"; default this one)."""
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    site = None
    if python not in (None, here):
        site = fetch_wheels(python, dst.parent / ".wheels")
    for rel in RUNTIME_MODULES:
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, dst / rel)
    (dst / "compiler" / "__init__.py").write_text(INIT)
    check_imports(dst)

    tvm_lib = _package_dir("tvm") / "lib"
    (dst / "lib").mkdir()
    for name in ("libtvm_runtime.so", "libtvm_runtime_cuda.so"):
        shutil.copy2(tvm_lib / name, dst / "lib" / name)
    cudart = _needed_library(tvm_lib / "libtvm_runtime_cuda.so", "libcudart.so")
    if cudart is not None:              # found beside the runtime through its RUNPATH ($ORIGIN)
        shutil.copy2(cudart, dst / "lib" / cudart.name)
    else:
        print("runtime bundle: libcudart not found here; cuda artifacts need it on the GPU machine",
              file=sys.stderr)

    ffi = _package_dir("tvm_ffi", site)
    _copy_python(ffi, dst / "tvm_ffi", ("core.*.so", "lib/libtvm_ffi.so", "lib/libtvm_ffi_testing.so"))
    if importlib.util.find_spec("iree") and importlib.util.find_spec("iree.runtime"):
        iree = _package_dir("iree", site)
        for pkg in ("runtime", "_runtime"):
            _copy_python(iree / pkg, dst / "iree" / pkg)
        _copy_python(iree / "_runtime_libs", dst / "iree" / "_runtime_libs", ("_runtime.*.so",))
    else:                               # an optional dependency (dyc[mlir])
        print("runtime bundle: iree-base-runtime is not installed: the bundle loads tvm artifacts only",
              file=sys.stderr)
    shutil.copytree(_package_dir("ml_dtypes", site), dst / "ml_dtypes",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(importlib.util.find_spec("typing_extensions").origin, dst / "typing_extensions.py")
    _dist_metadata(dst, "apache-tvm", "TVM's runtime library only, from a dyc runtime bundle")
    _dist_metadata(dst, "apache-tvm-ffi", "tvm_ffi, from a dyc runtime bundle")
    (dst / "README.txt").write_text(README.format(py=python or here, name=dst.name if dst.name else "."))


def size_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file() and not f.is_symlink())


def make_bundle(out: Path, max_mb: float = 40.0, python: str | None = None) -> int:
    """Build the bundle at `out` (replacing it) for CPython `python` (default this one); returns its size
    in bytes. SystemExit if over max_mb."""
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as tmp:
        staged = Path(tmp) / out.name
        staged.mkdir()
        build(staged, python)
        size = size_bytes(staged)
        if size > max_mb * 1e6:
            raise SystemExit(f"runtime bundle: {size / 1e6:.1f} MB, over the {max_mb:g} MB limit; "
                             f"{out} left as it was")
        if out.exists():
            shutil.rmtree(out)
        staged.rename(out)
    return size


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--output", default=str(ROOT / "out" / "runtime-bundle"),
                    help="the folder to write (default: out/runtime-bundle)")
    ap.add_argument("--max-mb", type=float, default=40.0,
                    help="fail if the bundle is larger (MB = 10^6 bytes; default 40)")
    ap.add_argument("--python", default=None, metavar="X.Y",
                    help="the CPython version the bundle is for (default: this one's); another one's "
                         "extension modules come from pip download (needs the package index)")
    args = ap.parse_args(argv)
    if args.python is not None and not re.fullmatch(r"3\.\d+", args.python):
        ap.error(f"--python takes a version like 3.12, not {args.python!r}")
    size = make_bundle(Path(args.output), args.max_mb, args.python)
    print(f"runtime bundle: {size / 1e6:.1f} MB at {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
