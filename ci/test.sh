#!/usr/bin/env bash
# test.sh - build ferry and run its whole test suite: the README's test command.
#
#   bash ci/test.sh
#
# Stages, each reported on its own line at the end:
#   deps      ci/install-deps.sh build test vm (only what is missing)
#   release   RelWithDebInfo build, warnings as errors, ctest
#   asan      AddressSanitizer + UndefinedBehaviorSanitizer build (assertions on), ctest
#   tsan      ThreadSanitizer build, only the tests labelled `threads`
#   fuzz      clang + libFuzzer build of tests/fuzz, each harness for ~10 s (label fuzz)
#   softroce  ci/softroce.sh: the verbs and ofi+verbs suites on soft-RoCE (a qemu VM here)
# The last line is "N passed, N failed, N skipped", summed over every stage's tests.
# A stage that fails outside its tests (configure, build, a script without counts)
# adds 1 to "failed", so a broken run never closes on "0 failed". Exit status is 0
# only if nothing failed.
#
# Environment:
#   FERRY_BUILD_ROOT          where the build trees go (default: build)
#   FERRY_TEST_EXCLUDE_LABELS ctest labels left out (default: soak|bench)
#   FERRY_TEST_DEPS=0         do not run ci/install-deps.sh
#   FERRY_TEST_ASAN=0, FERRY_TEST_TSAN=0, FERRY_TEST_FUZZ=0, FERRY_TEST_SOFTROCE=0
#                             skip that stage
#   FERRY_TEST_JOBS           parallel build and test jobs (default: 2)
#   FERRY_TEST_TIMEOUT        default per-test timeout in seconds (default: 900)
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
ROOT=$PWD
BUILD_ROOT=${FERRY_BUILD_ROOT:-build}
case $BUILD_ROOT in /*) ;; *) BUILD_ROOT=$ROOT/$BUILD_ROOT ;; esac
JOBS=${FERRY_TEST_JOBS:-2}
EXCLUDE=${FERRY_TEST_EXCLUDE_LABELS:-soak|bench}
TIMEOUT=${FERRY_TEST_TIMEOUT:-900}

STAGES=()         # name per stage, in order
declare -A ST_RES # passed | failed | skipped
declare -A ST_MSG # one line of detail
TOT_P=0 TOT_F=0 TOT_S=0

say() { printf '\n=== ferry ci: %s\n' "$*"; }

stage_end() { # name result message
	STAGES+=("$1")
	ST_RES[$1]=$2
	ST_MSG[$1]=$3
	say "$1: $2${3:+ - $3}"
}

# A stage whose code broke before it recorded a result must not vanish from the count.
ensure_stage() { # name
	if [ -z "${ST_RES[$1]:-}" ]; then
		TOT_F=$((TOT_F + 1))
		stage_end "$1" failed "ci/test.sh could not account this stage (counted as 1 failed)"
	fi
}

dur() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }

# Counts from ctest's JUnit file: sets C_TOTAL C_FAIL C_SKIP C_PASS C_FAILED_NAMES.
# The <testsuite ...> element spans several lines: join them first.
junit_counts() {
	local f=$1 xml head
	C_TOTAL=0 C_FAIL=0 C_SKIP=0 C_PASS=0 C_FAILED_NAMES=
	[ -s "$f" ] || return 1
	xml=$(tr '\n\t' '  ' <"$f")
	head=$(grep -o '<testsuite [^>]*>' <<<"$xml" | head -n1)
	[ -n "$head" ] || return 1
	attr() {
		local v
		v=$(sed -n "s/.* $1=\"\([0-9]*\)\".*/\1/p" <<<"$head")
		echo "${v:-0}"
	}
	C_TOTAL=$(attr tests)
	C_FAIL=$(attr failures)
	C_SKIP=$(($(attr skipped) + $(attr disabled)))
	C_PASS=$((C_TOTAL - C_FAIL - C_SKIP))
	C_FAILED_NAMES=$(grep -o '<testcase name="[^"]*"[^>]*status="fail"' <<<"$xml" |
		sed 's/<testcase name="\([^"]*\)".*/\1/' | head -n 12 | tr '\n' ' ')
	C_FAILED_NAMES=${C_FAILED_NAMES% }
	[ "$C_FAIL" -le 12 ] || C_FAILED_NAMES+=" (+$((C_FAIL - 12)) more)"
	return 0
}

# configure + build one tree; returns non-zero with REASON set on failure.
build_tree() { # dir cmake-args...
	local dir=$1
	shift
	say "configure $dir"
	if ! cmake -S "$ROOT" -B "$dir" -DFERRY_BUILD_TESTS=ON "$@"; then
		REASON="cmake configure failed"
		return 1
	fi
	say "build $dir"
	if ! cmake --build "$dir" -j"$JOBS"; then
		REASON="build failed"
		return 1
	fi
}

# Runs ctest in dir with extra selection args, and accounts the stage.
ctest_stage() { # name dir ctest-args...
	local name=$1 dir=$2 t0=$SECONDS rc junit
	shift 2
	junit=$dir/ctest-junit.xml
	rm -f "$junit"
	say "$name: ctest $*"
	env "${CTEST_ENV[@]}" ctest --test-dir "$dir" --output-on-failure -j"$JOBS" \
		--timeout "$TIMEOUT" --output-junit "$junit" "$@"
	rc=$?
	if ! junit_counts "$junit"; then
		TOT_F=$((TOT_F + 1))
		stage_end "$name" failed "ctest exited $rc and wrote no results (counted as 1 failed)"
		return
	fi
	TOT_P=$((TOT_P + C_PASS)) TOT_F=$((TOT_F + C_FAIL)) TOT_S=$((TOT_S + C_SKIP))
	local counts="$C_PASS passed, $C_FAIL failed, $C_SKIP skipped ($(dur $((SECONDS - t0))))"
	if [ "$C_TOTAL" -eq 0 ]; then
		TOT_F=$((TOT_F + 1))
		stage_end "$name" failed "no test ran (counted as 1 failed)"
	elif [ "$C_FAIL" -gt 0 ]; then
		stage_end "$name" failed "$counts; failed: ${C_FAILED_NAMES:-?}"
	elif [ $rc -ne 0 ]; then
		TOT_F=$((TOT_F + 1))
		stage_end "$name" failed "$counts, but ctest exited $rc (counted as 1 failed)"
	else
		stage_end "$name" passed "$counts"
	fi
}

# Environment for ctest in the sanitizer stages (the caller's own settings win).
CTEST_ENV=()
SAN_ENV=(
	"ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:strict_string_checks=1}"
	"LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$ROOT/ci/lsan.supp:print_suppressions=0}"
	"UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
	"TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1}"
)

# Sanitizer builds: Debug so that assertions (lock ownership, invariants) are on, at
# -O1 so that the large-transfer tests stay fast. Warnings are errors in `release`.
SAN_ARGS=(-DCMAKE_BUILD_TYPE=Debug "-DCMAKE_C_FLAGS_DEBUG=-O1 -g" -DFERRY_BUILD_PERF=ON)

# ------------------------------------------------------------------ deps
if [ "${FERRY_TEST_DEPS:-1}" = 0 ]; then
	stage_end deps skipped "FERRY_TEST_DEPS=0"
elif bash ci/install-deps.sh build test vm; then
	stage_end deps passed "build, test and vm packages present"
else
	TOT_F=$((TOT_F + 1))
	stage_end deps failed "ci/install-deps.sh failed (counted as 1 failed); trying to build anyway"
fi

# ------------------------------------------------------------------ release
t0=$SECONDS
if build_tree "$BUILD_ROOT/ci-release" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFERRY_WERROR=ON \
	-DFERRY_SANITIZER=none; then
	ctest_stage release "$BUILD_ROOT/ci-release" -LE "^($EXCLUDE)\$"
	ensure_stage release
else
	TOT_F=$((TOT_F + 1))
	stage_end release failed "$REASON after $(dur $((SECONDS - t0))) (counted as 1 failed)"
fi

# ------------------------------------------------------------------ asan + ubsan
t0=$SECONDS
if [ "${FERRY_TEST_ASAN:-1}" = 0 ]; then
	stage_end asan skipped "FERRY_TEST_ASAN=0"
elif build_tree "$BUILD_ROOT/ci-asan" "${SAN_ARGS[@]}" -DFERRY_SANITIZER=address,undefined; then
	CTEST_ENV=("${SAN_ENV[@]}")
	ctest_stage asan "$BUILD_ROOT/ci-asan" -LE "^($EXCLUDE)\$"
	ensure_stage asan
	CTEST_ENV=()
else
	TOT_F=$((TOT_F + 1))
	stage_end asan failed "$REASON after $(dur $((SECONDS - t0))) (counted as 1 failed)"
fi

# ------------------------------------------------------------------ tsan
t0=$SECONDS
TSAN_DIR=$BUILD_ROOT/ci-tsan
if [ "${FERRY_TEST_TSAN:-1}" = 0 ]; then
	stage_end tsan skipped "FERRY_TEST_TSAN=0"
elif ! cmake -S "$ROOT" -B "$TSAN_DIR" -DFERRY_BUILD_TESTS=ON "${SAN_ARGS[@]}" \
	-DFERRY_SANITIZER=thread; then
	TOT_F=$((TOT_F + 1))
	stage_end tsan failed "cmake configure failed (counted as 1 failed)"
else
	# Listing needs a configured tree only: skip the whole build when nothing is labelled.
	n_threads=$(ctest --test-dir "$TSAN_DIR" -N -L '^threads$' | sed -n 's/^Total Tests: *//p')
	if [ "${n_threads:-0}" -eq 0 ]; then
		stage_end tsan skipped "no test is labelled 'threads' yet"
	elif build_tree "$TSAN_DIR" "${SAN_ARGS[@]}" -DFERRY_SANITIZER=thread; then
		CTEST_ENV=("${SAN_ENV[@]}")
		ctest_stage tsan "$TSAN_DIR" -L '^threads$'
		ensure_stage tsan
		CTEST_ENV=()
	else
		TOT_F=$((TOT_F + 1))
		stage_end tsan failed "$REASON after $(dur $((SECONDS - t0))) (counted as 1 failed)"
	fi
fi

# ------------------------------------------------------------------ fuzz smoke
# libFuzzer needs clang: a separate tree built with FERRY_FUZZ=ON (only the harnesses),
# each target run for a bounded time from a copy of the seed corpus (tests/fuzz).
t0=$SECONDS
FUZZ_DIR=$BUILD_ROOT/ci-fuzz
if [ "${FERRY_TEST_FUZZ:-1}" = 0 ]; then
	stage_end fuzz skipped "FERRY_TEST_FUZZ=0"
elif ! command -v clang >/dev/null; then
	stage_end fuzz skipped "clang is not installed: no libFuzzer"
elif CC=clang build_tree "$FUZZ_DIR" -DFERRY_FUZZ=ON -DCMAKE_BUILD_TYPE=Debug \
	"-DCMAKE_C_FLAGS_DEBUG=-O1 -g"; then
	CTEST_ENV=("${SAN_ENV[@]}")
	ctest_stage fuzz "$FUZZ_DIR" -L '^fuzz$'
	ensure_stage fuzz
	CTEST_ENV=()
else
	TOT_F=$((TOT_F + 1))
	stage_end fuzz failed "$REASON after $(dur $((SECONDS - t0))) (counted as 1 failed)"
fi

# ------------------------------------------------------------------ soft-RoCE
# ci/softroce.sh runs the verbs and ofi+verbs suites on soft-RoCE (in a qemu VM on hosts without
# RDMA). Its exit status is the suite's; 77 means it could not run here, with the
# reason on a "SKIP: ..." line (no qemu, no guest kernel, no verbs test yet).
# Its test counts are taken from its last "N passed, N failed[, N skipped]" line, or
# from ctest's "tests passed, N tests failed out of T" summary.
t0=$SECONDS
if [ "${FERRY_TEST_SOFTROCE:-1}" = 0 ]; then
	stage_end softroce skipped "FERRY_TEST_SOFTROCE=0: the verbs suite did not run"
elif [ ! -f ci/softroce.sh ]; then
	stage_end softroce skipped "ci/softroce.sh does not exist yet: the verbs suite did not run"
else
	say "softroce: bash ci/softroce.sh"
	log=$BUILD_ROOT/ci-softroce.log
	mkdir -p "$BUILD_ROOT"
	# The release tree is reused: already built, nothing to rebuild for the VM.
	bash ci/softroce.sh --build-dir "$BUILD_ROOT/ci-release" 2>&1 | tee "$log"
	rc=${PIPESTATUS[0]}
	p= f= s=
	if line=$(grep -E '^([A-Za-z]+: )?[0-9]+ passed, [0-9]+ failed' "$log" | tail -n1); then
		read -r p f s < <(sed -E 's/^([A-Za-z]+: )?([0-9]+) passed, ([0-9]+) failed(, ([0-9]+) skipped)?.*/\2 \3 \5/' <<<"$line")
	elif line=$(grep -E 'tests passed, [0-9]+ tests failed out of [0-9]+' "$log" | tail -n1); then
		f=$(sed -E 's/.*tests passed, ([0-9]+) tests failed out of.*/\1/' <<<"$line")
		total=$(sed -E 's/.*failed out of ([0-9]+).*/\1/' <<<"$line")
		s=$(grep -cE '^[[:space:]]*[0-9]+ - .*\(Skipped\)' "$log")
		p=$((total - f - s))
	fi
	s=${s:-0}
	took=$(dur $((SECONDS - t0)))
	if [ -n "$p" ]; then
		TOT_P=$((TOT_P + p)) TOT_F=$((TOT_F + f)) TOT_S=$((TOT_S + s))
		counts="$p passed, $f failed, $s skipped ($took)"
	else
		counts="no test counts in its output ($took)"
	fi
	if [ "$rc" -eq 77 ]; then
		reason=$(grep -E '^SKIP: ' "$log" | tail -n1 | sed 's/^SKIP: //')
		stage_end softroce skipped "${reason:-ci/softroce.sh could not run here}"
	elif [ "$rc" -ne 0 ]; then
		[ -n "$p" ] && [ "$f" -gt 0 ] || TOT_F=$((TOT_F + 1))
		stage_end softroce failed "ci/softroce.sh exited $rc; $counts"
	else
		stage_end softroce passed "$counts"
	fi
fi

ensure_stage softroce

# ------------------------------------------------------------------ summary
echo
echo "==================== ferry test summary ===================="
for s in "${STAGES[@]}"; do
	printf '%-9s %-8s %s\n' "$s" "${ST_RES[$s]}" "${ST_MSG[$s]}"
done
echo "============================================================"
echo "$TOT_P passed, $TOT_F failed, $TOT_S skipped"
[ "$TOT_F" -eq 0 ]
