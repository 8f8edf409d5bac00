#!/bin/sh
# run_netns.sh - the compression benchmark of docs/BENCHMARKS-compress.md: a veth pair
# between two network namespaces, shaped with tbf (RATE, default 1gbit) on both ends,
# compress_bench's server in one namespace and its client in the other, every data
# kind under every policy. Prints a markdown table (and the raw lines on stderr).
#
#   sudo perf/compress_bench/run_netns.sh BUILD/perf/compress_bench/compress_bench
#
# Environment: RATE (1gbit; "none" = no shaping), SIZE (4M), TOTAL (256M), REPEAT (3),
# OPS ("send write"), DATA ("json fp16 random mixed"), POLICIES ("off on auto"),
# EXTRA (more client variables, e.g. "FERRY_COMPRESS_LEVEL=3"), ARGS (more client
# options, e.g. "--zc-keep").
# Exits 77 (skip) when namespaces cannot be created here, saying why.
set -eu

BENCH=${1:?usage: run_netns.sh PATH/TO/compress_bench}
RATE=${RATE:-1gbit}
SIZE=${SIZE:-4M}
TOTAL=${TOTAL:-256M}
REPEAT=${REPEAT:-3}
OPS=${OPS:-send write}
DATA=${DATA:-json fp16 random mixed}
POLICIES=${POLICIES:-off on auto}
EXTRA=${EXTRA:-}
ARGS=${ARGS:-}
NA=fzb_a.$$
NB=fzb_b.$$
VA=fzbva$$
VB=fzbvb$$
PORT=18650
SP=

cleanup() {
	[ -n "$SP" ] && kill "$SP" 2>/dev/null || true
	ip netns del "$NA" 2>/dev/null || true
	ip netns del "$NB" 2>/dev/null || true
}
trap cleanup EXIT INT TERM

if ! err=$(ip netns add "$NA" 2>&1); then
	echo "SKIP: cannot create a network namespace: $err" >&2
	exit 77
fi
ip netns add "$NB"
ip link add "$VA" netns "$NA" type veth peer name "$VB" netns "$NB"
ip -n "$NA" addr add 10.77.0.1/24 dev "$VA"
ip -n "$NB" addr add 10.77.0.2/24 dev "$VB"
for ns in "$NA" "$NB"; do ip -n "$ns" link set lo up; done
ip -n "$NA" link set "$VA" up
ip -n "$NB" link set "$VB" up
if [ "$RATE" != none ]; then
	# Both directions: data one way, acknowledgements the other.
	tc -n "$NA" qdisc add dev "$VA" root tbf rate "$RATE" burst 512kb latency 50ms
	tc -n "$NB" qdisc add dev "$VB" root tbf rate "$RATE" burst 512kb latency 50ms
fi

ip netns exec "$NB" "$BENCH" server -H 10.77.0.2 -p $PORT &
SP=$!
sleep 0.5

echo "| op | data | policy | effective MB/s | wire MB/s | ratio | sender CPU s |"
echo "| --- | --- | --- | ---: | ---: | ---: | ---: |"
for op in $OPS; do
	for d in $DATA; do
		for p in $POLICIES; do
			line=$(env FERRY_COMPRESS="$p" $EXTRA ip netns exec "$NA" "$BENCH" client \
				10.77.0.2 -p $PORT -d "$d" -s "$SIZE" -t "$TOTAL" -r "$REPEAT" \
				-o "$op" $ARGS | tee -a /dev/stderr | tail -n 1)
			# data op size policy median MB/s wire_MB/s ratio cpu_s
			set -- $line
			echo "| $op | $d | $p | $6 | $7 | $8 | $9 |"
		done
	done
done
