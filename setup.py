"""Builds the compiled hot path in native/ (and the benchmark floor) with Cython.

A failed compilation fails the build: there is no pure-Python fallback, so a
broken toolchain can never silently make the switch slow.
"""
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
# seals with OpenSSL's libcrypto (the one Python's ssl module loads).
LIBRARIES = {"native.sqlbatch": ["sqlite3"], "native.aead": ["crypto"]}


def extensions():
    exts = []
    # PAYSWITCH_ONLY=native/framing.pyx builds just that module (for working on one at a time).
    only = os.environ.get("PAYSWITCH_ONLY")
    sources = sorted(glob.glob("native/*.pyx") + glob.glob("benchmarks/*.pyx"))
    if only:
        sources = [p for p in sources if p in only.split(",")]
    for pyx in sources:
        module = pyx[:-4].replace(os.sep, ".")
        exts.append(
            Extension(
                module,
                [pyx],
                extra_compile_args=compile_args,
                extra_link_args=link_args,
                libraries=LIBRARIES.get(module, []),
            )
        )
    return exts


setup(
    ext_modules=cythonize(
        extensions(),
        language_level=3,
        compiler_directives={
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "embedsignature": True,
        },
        annotate=bool(os.environ.get("PAYSWITCH_ANNOTATE")),
    ),
)
