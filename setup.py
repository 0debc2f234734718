"""Builds the compiled hot path with Cython: native/ (and the benchmark floor),
and the request path's Python modules from their own source (switch/compiled.py).

A failed compilation fails the build: native/ has no pure-Python fallback, and
``serve`` refuses to start on a request-path module that is not compiled or is
older than its source, so a broken toolchain can never silently make the
switch slow.
"""
import ast
import glob
import os

from Cython.Build import cythonize
from setuptools import Extension, setup

SANITIZE = os.environ.get("PAYSWITCH_SANITIZE")  # "address" for fuzzing builds

compile_args = ["-O2"]
link_args = []
if SANITIZE:
    compile_args = ["-O1", "-g", "-fno-omit-frame-pointer", f"-fsanitize={SANITIZE}"]
    link_args = [f"-fsanitize={SANITIZE}"]


# native/sqlbatch.pyx steps journal batches through the SQLite C API; native/aead.pyx
# seals and native/hmac256.pyx hashes with OpenSSL's libcrypto (the one Python's ssl module loads).
LIBRARIES = {"native.sqlbatch": ["sqlite3"], "native.aead": ["crypto"], "native.hmac256": ["crypto"]}


def request_path() -> list[str]:
    """The sources of switch.compiled.MODULES, read without importing the project."""
    with open(os.path.join("switch", "compiled.py")) as f:
        tree = ast.parse(f.read())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "MODULES" for t in node.targets):
            return [m.replace(".", os.sep) + ".py" for m in ast.literal_eval(node.value)]
    raise SystemExit("setup.py: switch/compiled.py has no MODULES")


def extensions(sources):
    exts = []
    # PAYSWITCH_ONLY=native/framing.pyx builds just that module (for working on one at a time).
    only = os.environ.get("PAYSWITCH_ONLY")
    if only:
        sources = [p for p in sources if p in only.split(",")]
    for src in sources:
        module = os.path.splitext(src)[0].replace(os.sep, ".")
        exts.append(
            Extension(
                module,
                [src],
                extra_compile_args=compile_args,
                extra_link_args=link_args,
                libraries=LIBRARIES.get(module, []),
            )
        )
    return exts


def compiled():
    """Every extension; none under PAYSWITCH_NO_EXTENSIONS=1, which the Makefile's
    editable installs set: `make build` compiles in place, two cores at a time,
    what the install would otherwise compile a second time on one."""
    if os.environ.get("PAYSWITCH_NO_EXTENSIONS") == "1":
        return []
    return cythonize(
        extensions(sorted(glob.glob("native/*.pyx") + glob.glob("benchmarks/*.pyx"))),
        language_level=3,
        compiler_directives={
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "embedsignature": True,
        },
        nthreads=threads,
        annotate=annotate,
    ) + cythonize(
        # Python's semantics kept whole: negative indices, checked bounds, Python's
        # division, and annotations that document without checking (a subclass of
        # dict passes where the annotation says dict).
        extensions(request_path()),
        language_level=3,
        compiler_directives={"annotation_typing": False, "binding": True},
        nthreads=threads,
        annotate=annotate,
    )


threads = os.cpu_count() or 1
annotate = bool(os.environ.get("PAYSWITCH_ANNOTATE"))
setup(ext_modules=compiled())
