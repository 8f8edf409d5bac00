#!/usr/bin/env bash
# install-deps.sh - install the Debian packages ferry needs, only those missing.
#
#   ci/install-deps.sh [SET...]      SET: build test vm perf all   (default: build test)
#
#   build  compilers, cmake, pkg-config, cmocka and the provider libraries (rdma-core,
#          libfabric, zstd), clang with its sanitizer runtimes
#   test   tools the tests drive: ip/nft for namespaces and faults, rdma/ibv tools
#   vm     what ci/softroce.sh needs to boot Debian's kernel with rdma_rxe under qemu
#   perf   peers the benchmarks compare against (iperf3, sockperf, qperf, UCX)
#
# Checks each package with dpkg-query first: when everything is installed it changes
# nothing and needs no network. Otherwise runs `apt-get update` once and installs the
# missing ones. Works as root; otherwise uses sudo if there is one.
# Environment: FERRY_DEPS_DRY_RUN=1 only prints what it would install.
set -euo pipefail

declare -A SETS=(
	[build]="build-essential cmake pkg-config libcmocka-dev libibverbs-dev librdmacm-dev libfabric-dev libzstd-dev clang libclang-rt-14-dev"
	[test]="iproute2 nftables rdma-core ibverbs-utils libfabric-bin"
	[vm]="qemu-system-x86 linux-image-amd64 ibverbs-providers rdmacm-utils perftest busybox-static kmod cpio"
	[perf]="iperf3 sockperf qperf ucx-utils"
)

usage() {
	sed -n '2,/^set -euo/{/^#/{s/^# \{0,1\}//;p}}' "$0"
}

sets=()
for a in "$@"; do
	case $a in
	-h | --help) usage; exit 0 ;;
	all) sets+=(build test vm perf) ;;
	build | test | vm | perf) sets+=("$a") ;;
	*) echo "install-deps: unknown set '$a' (build test vm perf all)" >&2; exit 2 ;;
	esac
done
[ ${#sets[@]} -gt 0 ] || sets=(build test)

wanted=()
for s in "${sets[@]}"; do
	for p in ${SETS[$s]}; do
		[[ " ${wanted[*]-} " == *" $p "* ]] || wanted+=("$p")
	done
done

installed() {
	[ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" = installed ]
}

missing=()
for p in "${wanted[@]}"; do
	installed "$p" || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
	echo "install-deps: ${sets[*]}: all ${#wanted[@]} packages present"
	exit 0
fi
echo "install-deps: ${sets[*]}: missing ${missing[*]}"
if [ "${FERRY_DEPS_DRY_RUN:-0}" = 1 ]; then
	exit 0
fi

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
	if command -v sudo >/dev/null 2>&1; then
		SUDO=(sudo)
	else
		echo "install-deps: not root and no sudo: install them by hand:" >&2
		echo "  apt-get install ${missing[*]}" >&2
		exit 1
	fi
fi

export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
	apt-get install -y -qq --no-install-recommends "${missing[@]}"

still=()
for p in "${missing[@]}"; do
	installed "$p" || still+=("$p")
done
if [ ${#still[@]} -gt 0 ]; then
	echo "install-deps: still missing after apt-get: ${still[*]}" >&2
	exit 1
fi
echo "install-deps: installed ${missing[*]}"
