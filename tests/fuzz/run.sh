#!/usr/bin/env bash
# Fuzz the compiled modules with atheris on an AddressSanitizer build.
#
#   bash tests/fuzz/run.sh [SECONDS]          all targets, SECONDS in total (default 600)
#   bash tests/fuzz/run.sh repro TARGET FILE  run one input once (a crash from fuzz-artifacts/)
#
# FUZZ_TARGETS="framing iso8583-terminal-87" picks targets (default: all).
#
# A copy of native/ is compiled with -fsanitize=address and GCC's
# -fsanitize-coverage=trace-pc,trace-cmp in a temporary directory (the
# in-place build of `make build` and the generated .c files are not touched),
# which goes first on PYTHONPATH. Python runs with GCC's ASan runtime
# preloaded and PYTHONMALLOC=malloc, so that ASan sees every bytes/bytearray
# buffer the extensions read. tests/fuzz/sancov_shim.c, preloaded ahead of it,
# routes coverage to atheris's libFuzzer (see the comment there).
#
# New corpus entries go to fuzz-artifacts/corpus/TARGET (kept between runs),
# crashes to fuzz-artifacts/TARGET/ (both gitignored). The exit status is
# non-zero if any target crashed, failed an assertion or hung.
set -euo pipefail
cd "$(dirname "$0")/../.."

PY="$PWD/.venv/bin/python"
[ -x "$PY" ] || { echo "run.sh: $PY missing: run 'make build' first" >&2; exit 2; }

mode=fuzz
total=600
if [ "${1:-}" = repro ]; then
    mode=repro
    [ $# -eq 3 ] || { echo "usage: $0 repro TARGET FILE" >&2; exit 2; }
    repro_file=$(realpath "$3")
    targets=("$2")
else
    [ $# -ge 1 ] && total=$1
    if [ -n "${FUZZ_TARGETS:-}" ]; then
        read -r -a targets <<<"$FUZZ_TARGETS"
    elif [ -e native/iso8583.pyx ]; then
        targets=(framing iso8583-terminal-87 iso8583-iso87-ascii iso8583-host-87-bcd emv panguard aead clock)
    else
        echo "run.sh: native/iso8583.pyx not there yet: fuzzing framing only" >&2
        targets=(framing)
    fi
fi
if [ "${targets[*]}" = framing ]; then
    sources=native/framing.pyx
else
    sources=$(ls native/*.pyx | paste -sd, -)
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/payswitch-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT

# --- ASan build, out of place -------------------------------------------------
echo "run.sh: building ${sources//,/ } with AddressSanitizer in $work" >&2
start=$(date +%s)
mkdir -p "$work/src/switch"
cp setup.py "$work/src/"
cp switch/compiled.py "$work/src/switch/"  # setup.py reads the request path's list from it
"$PY" -c 'import shutil, sys; shutil.copytree("native", sys.argv[1], ignore=shutil.ignore_patterns("*.so", "*.c", "*.html", "__pycache__"))' \
    "$work/src/native"
if ! (
    cd "$work/src" &&
    CFLAGS="-fsanitize-coverage=trace-pc,trace-cmp" \
    PAYSWITCH_ONLY="$sources" PAYSWITCH_SANITIZE=address \
        "$PY" setup.py -q build_ext --inplace --build-temp "$work/tmp"
) >"$work/build.log" 2>&1; then
    cat "$work/build.log" >&2
    echo "run.sh: ASan build failed" >&2
    exit 2
fi
gcc -O2 -fPIC -shared -o "$work/sancov_shim.so" tests/fuzz/sancov_shim.c -ldl
echo "run.sh: build took $(( $(date +%s) - start )) s" >&2

atheris_core=$("$PY" -c 'import atheris, glob, os; print(glob.glob(os.path.join(os.path.dirname(atheris.__file__), "core_with_libfuzzer*.so"))[0])')
libasan=$(gcc -print-file-name=libasan.so)
[ -e "$libasan" ] || { echo "run.sh: GCC's AddressSanitizer runtime not found (Debian: apt-get install libasan8)" >&2; exit 2; }
# ASan's __cxa_throw interceptor needs libstdc++ loaded at start-up (atheris is C++).
libstdcxx=$(gcc -print-file-name=libstdc++.so.6)

run_target() {  # run_target TARGET [libFuzzer args...]
    env PYTHONPATH="$work/src:$PWD" \
        PYTHONMALLOC=malloc \
        ATHERIS_CORE="$atheris_core" \
        LD_PRELOAD="$work/sancov_shim.so $libasan $libstdcxx" \
        ASAN_OPTIONS="detect_leaks=0:verify_asan_link_order=0:allocator_may_return_null=1:handle_abort=1" \
        "$PY" tests/fuzz/fuzz.py "$@"
}

if [ "$mode" = repro ]; then
    run_target "${targets[0]}" -runs=1 "$repro_file"
    exit $?
fi

# --- fuzz ---------------------------------------------------------------------
per=$(( total / ${#targets[@]} ))
[ "$per" -ge 1 ] || per=1
failed=()
for target in "${targets[@]}"; do
    mkdir -p "fuzz-artifacts/$target" "fuzz-artifacts/corpus/$target"
    echo "run.sh: fuzzing $target for $per s" >&2
    log="fuzz-artifacts/$target/last-run.log"
    set +e
    run_target "$target" \
        -max_total_time="$per" -timeout=10 -rss_limit_mb=4096 -max_len=4096 \
        -use_value_profile=1 -print_final_stats=1 \
        -artifact_prefix="fuzz-artifacts/$target/" \
        "fuzz-artifacts/corpus/$target" "tests/fuzz/corpus/$target" >"$log" 2>&1
    rc=$?
    set -e
    grep -E "^(INFO: Loaded|fuzz target|#[0-9]+ +(INITED|DONE)|stat::number_of_executed_units|stat::average_exec_per_sec|Done )" "$log" >&2 || true
    if [ "$rc" -ne 0 ]; then
        failed+=("$target")
        echo "run.sh: $target FAILED (exit $rc), log in $log:" >&2
        report=$(grep -E -A40 "(==[0-9]+==ERROR|=== Uncaught Python exception)" "$log" | head -80 || true)
        if [ -n "$report" ]; then echo "$report" >&2; else tail -40 "$log" >&2; fi
        ls -1 "fuzz-artifacts/$target"/crash-* "fuzz-artifacts/$target"/timeout-* "fuzz-artifacts/$target"/oom-* 2>/dev/null >&2 || true
    fi
done

if [ ${#failed[@]} -ne 0 ]; then
    echo "run.sh: FAILED: ${failed[*]} (reproduce: bash tests/fuzz/run.sh repro TARGET fuzz-artifacts/TARGET/crash-...)" >&2
    exit 1
fi
echo "run.sh: ${targets[*]}: no crash in $total s" >&2
