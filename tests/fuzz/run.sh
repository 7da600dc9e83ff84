#!/bin/sh
# Builds every libFuzzer target (tests/fuzz/fuzz_*.c) into build-fuzz/ and runs
# each for SECONDS seconds from its seed corpus (tests/fuzz/corpus/<name>).
#
#   tests/fuzz/run.sh [SECONDS] [NAME...]     default 20 s, every target
#
# Each target is one test: it passes when libFuzzer stops at the time limit
# without a crash, leak, sanitizer report or timeout. Per target the script
# prints executions and coverage (libFuzzer's cov: edges, ft: features); the
# last line is `N passed, N failed`, and the exit status is non-zero when any
# target failed or did not build.
#
# Environment: CC (clang), FUZZ_BUILD (build-fuzz), FUZZ_JOBS (targets run at
# once, 1), FUZZ_TIMEOUT (seconds one input may take, 25), FUZZ_RSS_MB (2048),
# FUZZ_ARGS (more libFuzzer flags). New inputs libFuzzer finds go to
# $FUZZ_BUILD/corpus/<name>, never into the committed seeds; a crashing input
# is saved as $FUZZ_BUILD/artifacts/<name>/crash-<sha1>, to be minimised with
#   $FUZZ_BUILD/fuzz_<name> -minimize_crash=1 -runs=100000 FILE
# and added to tests/fuzz/corpus/<name>/ with a test in
# tests/unit/test_fuzz_regressions.c.
set -u

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT" || exit 2

SECS=${1:-20}
[ $# -gt 0 ] && shift
CC=${CC:-clang}
[ "$CC" = cc ] && CC=clang
BUILD=${FUZZ_BUILD:-build-fuzz}
JOBS=${FUZZ_JOBS:-1}
TIMEOUT=${FUZZ_TIMEOUT:-25}
RSS_MB=${FUZZ_RSS_MB:-2048}
PKGS="libmicrohttpd jansson openblas libuv libutf8proc libpng libjpeg"

# The library as fuzzer-instrumented objects (fuzzer-no-link: coverage
# counters without libFuzzer's main); UBSan reports abort so libFuzzer keeps
# the input.
if ! command -v "$CC" >/dev/null 2>&1; then
    echo "fuzz: $CC not found (Debian: apt-get install clang libclang-rt-dev)"
    echo "0 passed, 1 failed"
    exit 2
fi
SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined"
LIB_CFLAGS="-O1 -g $SAN -fsanitize=fuzzer-no-link -fno-omit-frame-pointer"
# $BUILD is only ever built with these flags: make does not notice a change
# of CFLAGS, so the library must not share a build folder with another build.
# The SIMD kernels get coverage but no sanitizers (see KERNEL_CFLAGS in the
# Makefile): clang takes over 15 minutes on them with both.
if ! make --no-print-directory -s -j"$(nproc 2>/dev/null || echo 2)" BUILD="$BUILD" CC="$CC" \
        CFLAGS="$LIB_CFLAGS" KERNEL_CFLAGS="-O1 -g -fsanitize=fuzzer-no-link" \
        "$BUILD/libpredictd.a"; then
    echo "fuzz: building $BUILD/libpredictd.a failed"
    echo "0 passed, 1 failed"
    exit 2
fi

if [ $# -gt 0 ]; then
    NAMES="$*"
else
    NAMES=$(for f in tests/fuzz/fuzz_*.c; do basename "$f" .c | sed 's/^fuzz_//'; done)
fi

# shellcheck disable=SC2086
PKG_CFLAGS=$(pkg-config --cflags $PKGS)
# shellcheck disable=SC2086
PKG_LIBS=$(pkg-config --libs $PKGS)
mkdir -p "$BUILD/corpus" "$BUILD/artifacts" "$BUILD/logs"

build_one() {
    # shellcheck disable=SC2086
    $CC -std=c11 -D_GNU_SOURCE -pthread -Wall -Wextra -Werror -Wshadow \
        -Wno-missing-field-initializers -O1 -g $SAN -fsanitize=fuzzer -fno-omit-frame-pointer \
        -I"$ROOT" $PKG_CFLAGS "$ROOT/tests/fuzz/fuzz_$1.c" "$BUILD/libpredictd.a" \
        $PKG_LIBS -lm -pthread -o "$BUILD/fuzz_$1"
}

# Runs one target; its log is $BUILD/logs/<name>.log and its verdict
# $BUILD/logs/<name>.rc.
run_one() {
    name=$1
    log="$BUILD/logs/$name.log"
    rm -f "$BUILD/logs/$name.rc"
    mkdir -p "$BUILD/corpus/$name" "$BUILD/artifacts/$name" "tests/fuzz/corpus/$name"
    dict=""
    case $name in
    json_*|tokenize|route|config) dict="-dict=tests/fuzz/json.dict" ;;
    esac
    # OpenBLAS's threads trip LeakSanitizer's thread bookkeeping at exit (see
    # the Makefile's asan-test); per-input leak checks stay on.
    # shellcheck disable=SC2086
    ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:allocator_may_return_null=1}" \
    UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}" \
    OPENBLAS_NUM_THREADS=1 \
        "$BUILD/fuzz_$name" -max_total_time="$SECS" -timeout="$TIMEOUT" -rss_limit_mb="$RSS_MB" \
        -print_final_stats=1 -artifact_prefix="$BUILD/artifacts/$name/" $dict ${FUZZ_ARGS:-} \
        "$BUILD/corpus/$name" "tests/fuzz/corpus/$name" >"$log" 2>&1
    echo $? >"$BUILD/logs/$name.rc"
}

report_one() {
    name=$1
    log="$BUILD/logs/$name.log"
    rc=$(cat "$BUILD/logs/$name.rc" 2>/dev/null || echo 99)
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    cov=$(grep -E '^#[0-9]+' "$log" | grep -o 'cov: [0-9]*' | tail -n 1)
    ft=$(grep -E '^#[0-9]+' "$log" | grep -o 'ft: [0-9]*' | tail -n 1)
    corp=$(grep -E '^#[0-9]+' "$log" | grep -o 'corp: [0-9]*/[0-9]*[a-zA-Z]*' | tail -n 1)
    if [ "$rc" = 0 ]; then
        printf 'PASS fuzz_%-18s %10s execs  %-9s %-9s %s\n' "$name" "${execs:-?}" "${cov:-cov: ?}" "${ft:-ft: ?}" "$corp"
        return 0
    fi
    printf 'FAIL fuzz_%-18s exit %s, %s execs; log %s\n' "$name" "$rc" "${execs:-?}" "$log"
    grep -E 'ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error|FUZZ_CHECK|SUMMARY' "$log" | head -n 5 | sed 's/^/    /'
    grep -E 'Test unit written to' "$log" | tail -n 1 | sed 's/^/    /'
    return 1
}

passed=0
failed=0
runnable=""
for name in $NAMES; do
    if [ ! -f "tests/fuzz/fuzz_$name.c" ]; then
        echo "FAIL fuzz_$name: no tests/fuzz/fuzz_$name.c"
        failed=$((failed + 1))
    elif build_one "$name"; then
        runnable="$runnable $name"
    else
        echo "FAIL fuzz_$name: does not build"
        failed=$((failed + 1))
    fi
done

echo "fuzz: $SECS s per target, $JOBS at once"
# shellcheck disable=SC2086 # a list of names, split on purpose
set -- $runnable
while [ $# -gt 0 ]; do
    batch=""
    i=0
    while [ $# -gt 0 ] && [ $i -lt "$JOBS" ]; do
        run_one "$1" &
        batch="$batch $1"
        i=$((i + 1))
        shift
    done
    wait
    for name in $batch; do
        if report_one "$name"; then
            passed=$((passed + 1))
        else
            failed=$((failed + 1))
        fi
    done
done

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
