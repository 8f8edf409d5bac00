#!/usr/bin/env bash
# bench.sh - the README's main job: build ferry (Release) and measure it here.
#
#   bash ci/bench.sh
#
# Installs the build packages that are missing, builds Release, prints ferry_info,
# then runs `ferry_perf --loopback` (both sides on this machine) on the best provider
# usable here -- verbs when an RDMA device is usable, else tcp -- for write_bw,
# send_bw and write_lat at a few sizes.
#
# Environment:
#   FERRY_BUILD_ROOT        where the build tree goes (default: build -> build/release)
#   FERRY_BENCH_PROVIDER    force a provider name or URI instead of choosing
#   FERRY_BENCH_BW_SIZES    sizes for write_bw/send_bw (default: 4096 65536 1048576)
#   FERRY_BENCH_LAT_SIZES   sizes for write_lat (default: 8 4096 65536)
#   FERRY_BENCH_ARGS        extra ferry_perf arguments (e.g. "-D 5" or "--json")
#   FERRY_BENCH_DEPS=0      do not run ci/install-deps.sh
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
BUILD_ROOT=${FERRY_BUILD_ROOT:-build}
case $BUILD_ROOT in /*) ;; *) BUILD_ROOT=$ROOT/$BUILD_ROOT ;; esac
BUILD=$BUILD_ROOT/release
read -r -a BW_SIZES <<<"${FERRY_BENCH_BW_SIZES:-4096 65536 1048576}"
read -r -a LAT_SIZES <<<"${FERRY_BENCH_LAT_SIZES:-8 4096 65536}"
read -r -a EXTRA <<<"${FERRY_BENCH_ARGS:-}"

say() { printf '\n=== ferry bench: %s\n' "$*"; }

if [ "${FERRY_BENCH_DEPS:-1}" != 0 ]; then
	bash ci/install-deps.sh build
fi

say "build (Release) in $BUILD"
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DFERRY_BUILD_PERF=ON \
	-DFERRY_SANITIZER=none
cmake --build "$BUILD" -j2

say "ferry_info"
"$BUILD/tools/ferry_info"

PERF=$BUILD/perf/ferry_perf
if [ ! -x "$PERF" ]; then
	echo "ferry bench: $PERF was not built (perf/ is missing or failed to build)." >&2
	echo "ferry bench: nothing to measure; see perf/CMakeLists.txt (target ferry_perf)." >&2
	exit 1
fi

# The best provider usable here: verbs needs a usable RDMA device (soft-RoCE counts);
# libfabric's tcp is not faster than ferry's own, so everything else runs tcp.
if [ -n "${FERRY_BENCH_PROVIDER:-}" ]; then
	PROVIDER=$FERRY_BENCH_PROVIDER
elif "$BUILD/tools/ferry_info" --usable | grep -qx verbs; then
	PROVIDER=verbs
else
	PROVIDER=tcp
fi
say "provider: $PROVIDER (usable here: $("$BUILD/tools/ferry_info" --usable | tr '\n' ' '))"

status=0
run() {
	say "ferry_perf $*"
	if ! "$PERF" "$@"; then
		echo "ferry bench: FAILED: ferry_perf $*" >&2
		status=1
	fi
}
for test in write_bw send_bw; do
	for s in "${BW_SIZES[@]}"; do
		run "$test" --loopback --provider "$PROVIDER" -s "$s" "${EXTRA[@]}"
	done
done
for s in "${LAT_SIZES[@]}"; do
	run write_lat --loopback --provider "$PROVIDER" -s "$s" "${EXTRA[@]}"
done

if [ $status -eq 0 ]; then
	say "done: every run finished"
else
	say "done: some runs FAILED (see above)"
fi
exit $status
