#!/usr/bin/env bash
# softroce.sh - run ferry's RDMA tests (or any command) against a real RDMA device:
# the host's own, a soft-RoCE (rdma_rxe) device created on the host, or, where the
# host kernel has no RDMA (containers, most CI runners), rdma_rxe inside a qemu VM
# that boots Debian's kernel under software emulation (ci/rxe-vm.sh).
#
#   ci/softroce.sh [options]                 build, then run the RDMA test suites (ferry's
#                                            verbs provider, and libfabric's verbs;ofi_rxm
#                                            through ferry's ofi provider) in one go:
#                                            ctest --test-dir BUILD -L REGEX --output-on-failure
#   ci/softroce.sh [options] -- COMMAND...   build, then run COMMAND instead
#   ci/softroce.sh [options] --perftest      run perftest (ib_write_bw, ib_read_bw,
#                                            ib_send_bw, ib_write_lat, ib_send_lat)
#
# Options
#   --build-dir DIR   ferry build tree (default build/softroce; configured Release if new)
#   --label REGEX     ctest label regex (default 'provider:(verbs|ofi\+verbs)'; one of
#                     them: provider:verbs, or 'provider:ofi\+verbs' ('+' is special)
#   --ctest-args S    more ctest arguments, split at blanks (e.g. "-E slow -j2")
#   --no-build        do not configure/build (COMMAND needs nothing built, or it is)
#   --vm | --host     force the VM, or the host (default: host if it has a usable RDMA
#                     device or can load rdma_rxe, else VM)
#   --mtu N           MTU of the dummy netdev under a created rxe (default 9000)
#   --share DIR       VM only: also share DIR read-write at the same path (repeatable;
#                     the repository and the build tree always are)
#   --timeout SECS    hard limit (default $FERRY_SOFTROCE_TIMEOUT or 900)
#   --log FILE        VM only: keep the guest console log;  --verbose: show the boot
#   perftest mode:
#   --sizes LIST      message sizes, comma separated (default 8,65536)
#   --iters N         iterations per run (default 1000)
#   --tests LIST      perftest programs (default ib_write_bw,ib_read_bw,ib_send_bw,ib_write_lat,ib_send_lat)
#   --perftest-args S extra arguments for both perftest sides (e.g. "-R" for rdma_cm)
#
# COMMAND (and the suite) run with `ulimit -l unlimited` (as root in the VM) and see
#   FERRY_TEST_HOST        IPv4 address of the RDMA device (what tests connect to)
#   FERRY_TEST_VERBS_DEV   device name (rxe0 in the VM)
#   FERRY_TEST_VERBS_PORT  port number
#   FERRY_TEST_VERBS_GID_IDX, RXE_GID_IDX  RoCE v2 GID index of that address (0 on IB)
#   RXE_DEV RXE_IP RXE_NETDEV (the same, for scripts), FERRY_SOFTROCE=vm|host
# Run inside that environment (FERRY_SOFTROCE set), this script runs directly: a
# script given as COMMAND can call `ci/softroce.sh --perftest ...` and then ferry_perf
# in the same VM boot.
#
# Exit status: the suite's / COMMAND's status, or
#   64 bad usage
#   77 SKIP, printed as "SKIP: verbs suite: <reason>": qemu or the guest kernel missing,
#      packages not installable, qemu cannot start, or no test matches the label
#   90 configure/build failed
#   91 the VM did not boot
#   92 rxe could not be brought up (in the VM or on the host)
#   93 the VM died or hit the timeout while the command ran
set -uo pipefail

ME=softroce
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
BUILD_DIR='' LABEL='provider:(verbs|ofi\+verbs)' DO_BUILD=1 MODE=auto MTU=9000 LOGFILE='' VERBOSE=0
TIMEOUT=${FERRY_SOFTROCE_TIMEOUT:-900}
PERFTEST=0 PT_SIZES=8,65536 PT_ITERS=1000 PT_TESTS=ib_write_bw,ib_read_bw,ib_send_bw,ib_write_lat,ib_send_lat PT_ARGS=
EXTRA_SHARES=() VM_OPTS=() CTEST_ARGS=() ORIG_ARGS=("$@")

log()  { echo "$ME: $*" >&2; }
skip() { echo "SKIP: verbs suite: $*"; exit 77; }
usage() { sed -n '2,/^set -uo/{/^#/{s/^# \{0,1\}//;p}}' "$0"; exit "${1:-0}"; }
usage_err() { echo "$ME: $*" >&2; echo "usage: ci/softroce.sh [--build-dir DIR] [--label REGEX] [--no-build] [--vm|--host] [--perftest ...] [-- COMMAND...]  (--help)" >&2; exit 64; }

while [ $# -gt 0 ]; do
	case $1 in
	--build-dir) [ $# -ge 2 ] || usage_err "$1 needs a value"; BUILD_DIR=$2; shift 2 ;;
	--label)     [ $# -ge 2 ] || usage_err "$1 needs a value"; LABEL=$2; shift 2 ;;
	--ctest-args) [ $# -ge 2 ] || usage_err "$1 needs a value"; read -r -a CTEST_ARGS <<<"$2"; shift 2 ;;
	--no-build)  DO_BUILD=0; shift ;;
	--vm)        MODE=vm; shift ;;
	--host)      MODE=host; shift ;;
	--mtu)       [ $# -ge 2 ] || usage_err "$1 needs a value"; MTU=$2; shift 2 ;;
	--share)     [ $# -ge 2 ] || usage_err "$1 needs a value"; EXTRA_SHARES+=("$2"); shift 2 ;;
	--timeout)   [ $# -ge 2 ] || usage_err "$1 needs a value"; TIMEOUT=$2; shift 2 ;;
	--log)       [ $# -ge 2 ] || usage_err "$1 needs a value"; LOGFILE=$2; shift 2 ;;
	--verbose)   VERBOSE=1; shift ;;
	--perftest)  PERFTEST=1; shift ;;
	--sizes)     [ $# -ge 2 ] || usage_err "$1 needs a value"; PT_SIZES=$2; shift 2 ;;
	--iters)     [ $# -ge 2 ] || usage_err "$1 needs a value"; PT_ITERS=$2; shift 2 ;;
	--tests)     [ $# -ge 2 ] || usage_err "$1 needs a value"; PT_TESTS=$2; shift 2 ;;
	--perftest-args) [ $# -ge 2 ] || usage_err "$1 needs a value"; PT_ARGS=$2; shift 2 ;;
	-h|--help)   usage 0 ;;
	--)          shift; break ;;
	*)           usage_err "unknown argument $1 (a command goes after --)" ;;
	esac
done
CMD=("$@")
[ $PERFTEST = 1 ] && [ ${#CMD[@]} -gt 0 ] && usage_err "--perftest and a COMMAND are exclusive"
[[ $MTU =~ ^[0-9]+$ ]] || usage_err "--mtu wants a number"
[[ $TIMEOUT =~ ^[0-9]+$ ]] && [ "$TIMEOUT" -ge 30 ] || usage_err "--timeout wants seconds >= 30"
[[ $PT_ITERS =~ ^[0-9]+$ ]] || usage_err "--iters wants a number"
[[ $PT_SIZES =~ ^[0-9]+(,[0-9]+)*$ ]] || usage_err "--sizes wants a comma separated list of numbers"
BUILD=$(realpath -m "${BUILD_DIR:-$REPO/build/softroce}")

# ------------------------------------------------------------------ perftest runner
# Server and client of each program on the one device, client connecting to its IP.
# perftest calibrates its clock from a cycles-vs-gettimeofday fit; under emulation the
# fit is sometimes too poor and it gives up with "Can't produce a report": retry that
# (and only that) twice.
run_perftest() {
	local dev=$FERRY_TEST_VERBS_DEV ip=$FERRY_TEST_HOST gidx=${FERRY_TEST_VERBS_GID_IDX:-0}
	local ibport=${FERRY_TEST_VERBS_PORT:-1} port=18515 fails=0 tmp t s attempt crc src spid
	local -a summary=() extra=()
	read -r -a extra <<<"$PT_ARGS"
	tmp=$(mktemp -d "${TMPDIR:-/tmp}/ferry-perftest.XXXXXX") || return 1
	echo "perftest on $dev port $ibport ($ip, gid index $gidx), sizes $PT_SIZES, $PT_ITERS iterations${PT_ARGS:+, extra: $PT_ARGS}"
	for t in ${PT_TESTS//,/ }; do
		command -v "$t" >/dev/null || { echo "$t: not found (package perftest)"; fails=$((fails+1)); continue; }
		for s in ${PT_SIZES//,/ }; do
			local -a args=(-d "$dev" -i "$ibport" -x "$gidx" -s "$s" -n "$PT_ITERS" -F "${extra[@]}")
			attempt=1
			while :; do
				port=$((port+1))
				timeout 300 "$t" "${args[@]}" -p "$port" >"$tmp/srv" 2>&1 &
				spid=$!
				# the client may only start once the server listens on its TCP port
				for _ in $(seq 150); do
					ss -Htln "sport = :$port" 2>/dev/null | grep -q . && break
					kill -0 "$spid" 2>/dev/null || break
					sleep 0.1
				done
				timeout 300 "$t" "${args[@]}" -p "$port" "$ip" >"$tmp/cli" 2>&1; crc=$?
				wait "$spid"; src=$?
				if { [ $crc != 0 ] || [ $src != 0 ]; } && [ $attempt -lt 3 ] &&
				   grep -q "Can't produce a report" "$tmp/cli" "$tmp/srv"; then
					echo "($t -s $s: perftest could not calibrate its clock, retrying)"
					attempt=$((attempt+1)); continue
				fi
				break
			done
			echo "== $t ${args[*]} $ip"
			if [ $crc = 0 ] && [ $src = 0 ]; then
				# the column header and the data line after it, from the client
				awk '/^ *#bytes/{h=$0; next} h!="" && /^ *[0-9]/{print h; print; exit}' "$tmp/cli"
				local line kv
				line=$(awk '/^ *#bytes/{h=1; next} h && /^ *[0-9]/{print; exit}' "$tmp/cli")
				case $t in
				*_bw)  kv=$(awk '{printf "bytes=%s iterations=%s bw_peak_MBps=%s bw_avg_MBps=%s msg_rate_Mpps=%s", $1,$2,$3,$4,$5}' <<<"$line") ;;
				*_lat) kv=$(awk '{printf "bytes=%s iterations=%s t_min_us=%s t_max_us=%s t_typical_us=%s t_avg_us=%s t_stdev_us=%s p99_us=%s p99.9_us=%s", $1,$2,$3,$4,$5,$6,$7,$8,$9}' <<<"$line") ;;
				*)     kv="raw=\"$line\"" ;;
				esac
				[ -n "$line" ] || kv="error=no-result-line"
				[ $attempt -gt 1 ] && kv+=" retries=$((attempt-1))"
				summary+=("PERFTEST test=$t $kv")
			else
				echo "FAILED (client=$crc server=$src, attempts=$attempt)"
				echo "---- client:"; tail -20 "$tmp/cli"; echo "---- server:"; tail -20 "$tmp/srv"
				summary+=("PERFTEST test=$t bytes=$s error=client:$crc,server:$src")
				fails=$((fails+1))
			fi
		done
	done
	rm -rf "$tmp"
	echo
	printf '%s\n' "${summary[@]}"
	[ $fails = 0 ] || { echo "perftest: $fails run(s) failed"; return 1; }
	return 0
}

run_here() {	# run the suite / COMMAND / perftest in the current (RDMA-capable) environment
	ulimit -l unlimited 2>/dev/null ||
		log "warning: cannot lift RLIMIT_MEMLOCK ($(ulimit -l) KiB): memory registration will be limited to that"
	ulimit -n 65536 2>/dev/null
	if [ $PERFTEST = 1 ]; then
		run_perftest
	elif [ ${#CMD[@]} -gt 0 ]; then
		"${CMD[@]}"
	else
		run_ctest
	fi
}

# ctest counts skipped tests (SKIP_RETURN_CODE) as passed: a suite whose tests all
# skipped (no device, provider not built) must say SKIP, never pass.
run_ctest() {
	local junit rc tests skipped v
	local -a jopt=()
	v=$(ctest --version | awk 'NR==1{print $3}')
	if [ "$(printf '%s\n3.21\n' "$v" | sort -V | head -1)" = 3.21 ]; then
		junit=$(mktemp "${TMPDIR:-/tmp}/ferry-ctest.XXXXXX") && jopt=(--output-junit "$junit")
	fi
	ctest --test-dir "$BUILD" -L "$LABEL" --output-on-failure --no-tests=error "${jopt[@]}" "${CTEST_ARGS[@]}"
	rc=$?
	[ ${#jopt[@]} -gt 0 ] && [ -s "$junit" ] || { rm -f "${junit:-}"; return $rc; }
	tests=$(grep -m1 -o 'tests="[0-9]*"' "$junit" | tr -dc 0-9)
	skipped=$(grep -m1 -o 'skipped="[0-9]*"' "$junit" | tr -dc 0-9)
	if [ "${skipped:-0}" -gt 0 ]; then
		echo "$skipped of $tests test(s) skipped:"
		grep -o 'SKIP: [^<]*' "$junit" | sed 's/&quot;/"/g; s/&apos;/'"'"'/g; s/&lt;/</g; s/&gt;/>/g; s/&amp;/\&/g' |
			sort | uniq -c
	fi
	# A test that passed may still have skipped single cases ("SKIP: prov: area:
	# reason"): ctest counts it as passed, so name them here.
	# (a file, not <(...): the VM's /dev has no /dev/fd)
	local partial whole=$junit.skips
	grep -o 'SKIP: [^<]*' "$junit" | sed 's/&quot;/"/g; s/&apos;/'"'"'/g; s/&lt;/</g; s/&gt;/>/g; s/&amp;/\&/g' >"$whole"
	partial=$(grep -h '^SKIP: [^:]*: [^:]*: ' "$BUILD/Testing/Temporary/LastTest.log" 2>/dev/null |
		grep -v -F -f "$whole" | sort -u)
	rm -f "$whole"
	if [ -n "$partial" ]; then
		echo "skipped inside tests that passed (not counted as skipped by ctest):"
		sed 's/^/  /' <<<"$partial" | cut -c1-400
	fi
	if [ $rc = 0 ] && [ "${tests:-0}" -gt 0 ] && [ "$skipped" = "$tests" ]; then
		echo "SKIP: verbs suite: all $tests test(s) labelled '$LABEL' skipped"
		rc=77
	fi
	rm -f "$junit"
	return $rc
}

# Already inside an RDMA environment set up by this script (the VM's guest-init, or
# host mode): run directly.  This is how a COMMAND script runs perftest in the VM.
if [ -n "${FERRY_SOFTROCE:-}" ] && [ -n "${FERRY_TEST_VERBS_DEV:-}" ] && [ -n "${FERRY_TEST_HOST:-}" ]; then
	run_here; exit $?
fi

# ------------------------------------------------------------------ packages
APT_UPDATED=0
ensure_pkgs() {	# PKG... : install those not installed; false when that is impossible
	local p missing=()
	command -v dpkg-query >/dev/null || return 0	# not Debian: the checks below decide
	for p in "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
	done
	[ ${#missing[@]} = 0 ] && return 0
	[ "$(id -u)" = 0 ] || { log "missing packages ${missing[*]} (and not root to install them)"; return 1; }
	log "installing missing packages: ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	if [ $APT_UPDATED = 0 ]; then timeout 600 apt-get update -q >&2 || log "apt-get update failed"; APT_UPDATED=1; fi
	timeout 1200 apt-get install -y -q --no-install-recommends "${missing[@]}" >&2 ||
		{ log "apt-get install ${missing[*]} failed"; return 1; }
}

# ------------------------------------------------------------------ build
if [ $DO_BUILD = 1 ]; then
	command -v cmake >/dev/null || skip "cmake not found"
	if [ ! -f "$BUILD/CMakeCache.txt" ]; then
		log "configuring $BUILD (Release)"
		cmake -S "$REPO" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >&2 || { log "ERROR: cmake configure failed"; exit 90; }
	fi
	log "building $BUILD"
	cmake --build "$BUILD" -j"${FERRY_BUILD_JOBS:-2}" >&2 || { log "ERROR: build failed"; exit 90; }
fi
if [ $PERFTEST = 0 ] && [ ${#CMD[@]} = 0 ]; then
	command -v ctest >/dev/null || skip "ctest not found"
	n=$(ctest --test-dir "$BUILD" -N -L "$LABEL" "${CTEST_ARGS[@]}" 2>/dev/null | awk '/^Total Tests:/{print $3}')
	[ "${n:-0}" -gt 0 ] || skip "no test labelled '$LABEL' in $BUILD (ferry built without the verbs provider?)"
	log "$n test(s) labelled '$LABEL'"
fi

# ------------------------------------------------------------------ host RDMA device?
# An ACTIVE port whose netdev has an IPv4 address: RoCE shows it as an IPv4-mapped
# RoCE v2 GID (whose index we need anyway); InfiniBand through its IPoIB netdev.
HOST_DEV='' HOST_PORT='' HOST_IP='' HOST_GIDX='' HOST_ND=''
find_host_dev() {
	local want=${1:-} devp dev pp g n v ll nd listed
	listed=$(ibv_devices 2>/dev/null | awk 'NR>2{print $1}')
	for devp in /sys/class/infiniband/*; do
		[ -d "$devp" ] || continue
		dev=${devp##*/}
		[ -n "$want" ] && [ "$dev" != "$want" ] && continue
		# a device libibverbs has no provider for is of no use
		command -v ibv_devices >/dev/null && ! grep -qx "$dev" <<<"$listed" && continue
		for pp in "$devp"/ports/*; do
			grep -q ACTIVE "$pp/state" 2>/dev/null || continue
			ll=$(cat "$pp/link_layer" 2>/dev/null)
			if [ "$ll" = Ethernet ]; then
				for g in "$pp"/gids/*; do
					n=${g##*/}; v=$(cat "$g" 2>/dev/null) || continue
					[[ $v == 0000:0000:0000:0000:0000:ffff:* ]] || continue
					[ "$(cat "$pp/gid_attrs/types/$n" 2>/dev/null)" = "RoCE v2" ] || continue
					v=${v#0000:0000:0000:0000:0000:ffff:}; v=${v//:/}
					HOST_IP=$((16#${v:0:2})).$((16#${v:2:2})).$((16#${v:4:2})).$((16#${v:6:2}))
					HOST_GIDX=$n HOST_ND=$(cat "$pp/gid_attrs/ndevs/$n" 2>/dev/null)
					HOST_DEV=$dev HOST_PORT=${pp##*/}
					return 0
				done
			else
				nd=$(rdma link show "$dev/${pp##*/}" 2>/dev/null | awk '{for(i=1;i<NF;i++) if($i=="netdev") print $(i+1)}')
				[ -n "$nd" ] || continue
				v=$(ip -4 -o addr show dev "$nd" 2>/dev/null | awk '{sub(/\/.*/,"",$4); print $4; exit}')
				[ -n "$v" ] || continue
				HOST_IP=$v HOST_GIDX=0 HOST_ND=$nd HOST_DEV=$dev HOST_PORT=${pp##*/}
				return 0
			fi
		done
	done
	return 1
}

# rxe on a dummy netdev of the host itself (host kernel has rdma_rxe): created here,
# deleted on exit.  Address from TEST-NET-1 (RFC 5737), never routed anywhere.
HOST_RXE_CREATED=0
HRXE_DEV=ferry_rxe0 HRXE_ND=ferryrxe0 HRXE_IP=${FERRY_SOFTROCE_HOST_IP:-192.0.2.1}
host_rxe_cleanup() {
	[ $HOST_RXE_CREATED = 1 ] || return 0
	rdma link delete "$HRXE_DEV" 2>/dev/null
	ip link del "$HRXE_ND" 2>/dev/null
}
host_can_rxe() {
	[ "$(id -u)" = 0 ] || return 1
	modprobe rdma_rxe 2>/dev/null
}
host_rxe_up() {
	local m
	modprobe crc32_generic 2>/dev/null	# hidden dependency; often built in
	for m in rdma_rxe ib_uverbs rdma_ucm dummy; do
		modprobe "$m" || { log "ERROR: modprobe $m failed"; return 1; }
	done
	# leftovers of an interrupted run
	rdma link delete "$HRXE_DEV" 2>/dev/null; ip link del "$HRXE_ND" 2>/dev/null
	HOST_RXE_CREATED=1
	ip link add "$HRXE_ND" type dummy &&
	ip link set "$HRXE_ND" mtu "$MTU" &&
	ip addr add "$HRXE_IP/24" dev "$HRXE_ND" &&
	ip link set "$HRXE_ND" up &&
	rdma link add "$HRXE_DEV" type rxe netdev "$HRXE_ND" || { log "ERROR: creating $HRXE_DEV on $HRXE_ND failed"; return 1; }
	for _ in $(seq 100); do
		find_host_dev "$HRXE_DEV" && [ "$HOST_IP" = "$HRXE_IP" ] && return 0
		sleep 0.1
	done
	log "ERROR: $HRXE_DEV: port not ACTIVE or no RoCE v2 GID for $HRXE_IP after 10 s"
	return 1
}

if [ $MODE = auto ]; then
	if find_host_dev "${FERRY_TEST_VERBS_DEV:-}"; then MODE=host
	elif host_can_rxe; then MODE=host
	else MODE=vm
	fi
fi

if [ $MODE = host ]; then
	ensure_pkgs rdma-core ibverbs-providers ibverbs-utils rdmacm-utils iproute2 kmod ||
		skip "RDMA user-space packages missing and not installable"
	[ $PERFTEST = 1 ] && { ensure_pkgs perftest || skip "package perftest missing and not installable"; }
	trap host_rxe_cleanup EXIT
	trap 'exit 130' INT TERM HUP
	if ! find_host_dev "${FERRY_TEST_VERBS_DEV:-}"; then
		host_can_rxe || { log "ERROR: no usable RDMA device and rdma_rxe cannot be loaded"; exit 92; }
		host_rxe_up || exit 92
	fi
	log "host mode: $HOST_DEV port $HOST_PORT netdev ${HOST_ND:-?} ip $HOST_IP gid index $HOST_GIDX"
	export FERRY_SOFTROCE=host FERRY_TEST_HOST=$HOST_IP FERRY_TEST_VERBS_DEV=$HOST_DEV
	export FERRY_TEST_VERBS_PORT=$HOST_PORT FERRY_TEST_VERBS_GID_IDX=$HOST_GIDX
	export RXE_DEV=$HOST_DEV RXE_IP=$HOST_IP RXE_NETDEV=$HOST_ND RXE_GID_IDX=$HOST_GIDX
	# this script again, which now finds FERRY_SOFTROCE set and runs directly: under
	# `timeout`, while this process stays to delete the rxe device it created
	timeout -k 10 "$TIMEOUT" "$HERE/softroce.sh" "${ORIG_ARGS[@]}"
	rc=$?
	[ $rc = 124 ] && log "ERROR: hit the ${TIMEOUT}s timeout (FERRY_SOFTROCE_TIMEOUT)"
	exit $rc
fi

# ------------------------------------------------------------------ VM
ensure_pkgs qemu-system-x86 linux-image-amd64 busybox-static kmod cpio iproute2 \
	rdma-core ibverbs-utils ibverbs-providers rdmacm-utils perftest ||
	skip "packages for the soft-RoCE VM missing and not installable"
SHARES=(--share "$REPO")
[[ $BUILD == "$REPO" || $BUILD == "$REPO"/* ]] || { mkdir -p "$BUILD"; SHARES+=(--share "$BUILD"); }
for s in "${EXTRA_SHARES[@]}"; do SHARES+=(--share "$s"); done
[ -n "$LOGFILE" ] && VM_OPTS+=(--log "$LOGFILE")
[ $VERBOSE = 1 ] && VM_OPTS+=(--verbose)
if [ $PERFTEST = 1 ]; then
	INNER=("$HERE/softroce.sh" --perftest --sizes "$PT_SIZES" --iters "$PT_ITERS" --tests "$PT_TESTS" --perftest-args "$PT_ARGS")
elif [ ${#CMD[@]} -gt 0 ]; then
	INNER=("${CMD[@]}")
else
	# this script again, inside the VM (run_ctest there)
	INNER=("$HERE/softroce.sh" --build-dir "$BUILD" --label "$LABEL" --ctest-args "${CTEST_ARGS[*]}")
fi
exec "$HERE/rxe-vm.sh" "${SHARES[@]}" "${VM_OPTS[@]}" --mtu "$MTU" --timeout "$TIMEOUT" -- "${INNER[@]}"
