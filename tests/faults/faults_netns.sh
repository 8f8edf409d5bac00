#!/usr/bin/env bash
# faults_netns.sh - ferry over real sockets between two network namespaces joined by
# a veth pair, with a kernel-made fault:
#
#   faults_netns.sh loss|tbf|linkdown PATH/TO/ft_peer PATH/TO/faults_netns_client
#
#   loss      nftables drops FERRY_NETNS_LOSS_PCT % (default 7) of the packets each
#             namespace sends (`numgen random mod 100 < N drop`): transfers complete,
#             verified.
#   tbf       `tc qdisc ... tbf rate 100mbit` on both ends: transfers complete, and the
#             server's connections (between two hosts, as ferry sees them) keep the
#             namespace's default congestion control.
#   linkdown  the client's end goes down during transfers (probes 200 ms x 3): ops fail,
#             the endpoint leaves the pool; after link up a new connect works.
#
# The server (ft_peer serve) runs in namespace A, the client in namespace B, with
# addresses from 10.231.N.0/30 that exist only inside these namespaces. Needs root,
# ip (iproute2) and, for loss, nft; without them it prints "SKIP: <reason>" and exits
# 77. Namespaces are named ferryft-<pid>-a/-b and removed on every exit path (trap);
# namespaces left by a run that was SIGKILLed are removed by the next run.
set -u

CASE=${1:-}
PEER=${2:-}
CLIENT=${3:-}
PFX=ferryft

skip() { echo "SKIP: faults.netns.$CASE: $*"; exit 77; }
fail() { echo "FAIL: faults.netns.$CASE: $*"; exit 1; }

case $CASE in loss | tbf | linkdown) ;; *) echo "usage: $0 loss|tbf|linkdown PEER CLIENT" >&2; exit 2 ;; esac
[ -x "$PEER" ] && [ -x "$CLIENT" ] || fail "binaries missing: '$PEER' '$CLIENT'"
[ "$(id -u)" -eq 0 ] || skip "needs root to create network namespaces"
command -v ip >/dev/null 2>&1 || skip "ip (iproute2) is not installed (ci/install-deps.sh test)"
if [ "$CASE" = loss ]; then
	command -v nft >/dev/null 2>&1 || skip "nft (nftables) is not installed (ci/install-deps.sh test)"
fi
if [ "$CASE" = tbf ]; then
	command -v tc >/dev/null 2>&1 || skip "tc (iproute2) is not installed (ci/install-deps.sh test)"
fi

# Namespaces of earlier runs whose process is gone (a SIGKILL skips any trap).
for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^$PFX-" || true); do
	p=${ns#"$PFX"-}
	p=${p%%-*}
	if ! kill -0 "$p" 2>/dev/null; then
		ip netns del "$ns" 2>/dev/null && echo "# removed stale namespace $ns"
	fi
done

A=$PFX-$$-a
B=$PFX-$$-b
VA=fta$$ # interface names: at most 15 characters
VB=ftb$$
NET=$(($$ % 250 + 1))
IPA=10.231.$NET.1
IPB=10.231.$NET.2
TMP=$(mktemp -d /tmp/ferry-netns-XXXXXX)
PEER_PID=
CLIENT_PID=

cleanup() {
	for p in $CLIENT_PID $PEER_PID; do
		if kill -0 "$p" 2>/dev/null; then
			kill -KILL "$p" 2>/dev/null
			wait "$p" 2>/dev/null
		fi
	done
	ip netns del "$A" 2>/dev/null
	ip netns del "$B" 2>/dev/null
	rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

ip netns add "$A" 2>"$TMP/err" || skip "cannot create a network namespace: $(head -c 200 "$TMP/err")"
ip netns add "$B" 2>"$TMP/err" || fail "ip netns add $B: $(cat "$TMP/err")"
ip link add "$VA" type veth peer name "$VB" 2>"$TMP/err" ||
	skip "cannot create a veth pair: $(head -c 200 "$TMP/err")"
set -e
ip link set "$VA" netns "$A"
ip link set "$VB" netns "$B"
ip -n "$A" addr add "$IPA/30" dev "$VA"
ip -n "$B" addr add "$IPB/30" dev "$VB"
ip -n "$A" link set lo up
ip -n "$B" link set lo up
ip -n "$A" link set "$VA" up
ip -n "$B" link set "$VB" up
set +e
echo "# namespaces $A ($IPA on $VA) and $B ($IPB on $VB)"

case $CASE in
loss)
	LOSS=${FERRY_NETNS_LOSS_PCT:-7}
	# veth hands whole GSO super-packets (up to 64 KiB) to the output hook: cap them at
	# one MTU so that the rule drops N% of real packets, not N% of 64 KiB bursts.
	ip -n "$A" link set dev "$VA" gso_max_size 1500 gso_max_segs 1 2>/dev/null ||
		echo "# could not cap GSO: losses hit whole GSO bursts"
	ip -n "$B" link set dev "$VB" gso_max_size 1500 gso_max_segs 1 2>/dev/null || true
	for ns in "$A" "$B"; do
		ip netns exec "$ns" nft -f - <<EOF || fail "nft rule in $ns"
table inet ferryft {
	chain out {
		type filter hook output priority 0; policy accept;
		numgen random mod 100 < $LOSS counter drop
	}
}
EOF
	done
	echo "# nftables drops $LOSS% of the packets each namespace sends"
	;;
tbf)
	tc -n "$A" qdisc add dev "$VA" root tbf rate 100mbit burst 64kb latency 100ms || fail "tc in $A"
	tc -n "$B" qdisc add dev "$VB" root tbf rate 100mbit burst 64kb latency 100ms || fail "tc in $B"
	echo "# tbf rate 100mbit on both ends"
	unset FERRY_TCP_CONGESTION # the check after the run is of ferry's default
	;;
linkdown)
	export FERRY_PROBE_INTERVAL_MS=${FERRY_PROBE_INTERVAL_MS:-200}
	export FERRY_PROBE_MISSES=${FERRY_PROBE_MISSES:-3}
	;;
esac

ip netns exec "$A" "$PEER" serve --listen "tcp://$IPA:0" --ro-len 16M --wr-max 128M \
	>"$TMP/peer.out" &
PEER_PID=$!
ADDR=
for _ in $(seq 100); do
	ADDR=$(sed -n 's/^FT_PEER_ADDR //p' "$TMP/peer.out" | head -n1)
	[ -n "$ADDR" ] && break
	kill -0 "$PEER_PID" 2>/dev/null || break
	sleep 0.1
done
[ -n "$ADDR" ] || fail "the server did not start in $A"
echo "# server in $A at $ADDR"

# Congestion control names ss prints in a connection's info line.
cc_names() { ip netns exec "$A" ss -tinH state established 2>/dev/null |
	grep -ow -E "$(tr -s ' ' '|' </proc/sys/net/ipv4/tcp_available_congestion_control)" |
	sort -u; }

ip netns exec "$B" "$CLIENT" "$CASE" "$ADDR" "$VB" &
CLIENT_PID=$!
# tbf: the server's connections, between two hosts as far as ferry can tell, keep the
# namespace's default congestion control (FERRY_TCP_CONGESTION unset gives CUBIC only
# to connections inside one host).
SEEN=
if [ "$CASE" = tbf ]; then
	while kill -0 "$CLIENT_PID" 2>/dev/null; do
		SEEN=$(printf '%s\n%s\n' "$SEEN" "$(cc_names)" | sed '/^$/d' | sort -u)
		sleep 0.2
	done
fi
wait "$CLIENT_PID"
rc=$?
CLIENT_PID=
if [ "$CASE" = tbf ]; then
	DEF=$(ip netns exec "$A" cat /proc/sys/net/ipv4/tcp_congestion_control)
	echo "# congestion control of the server's connections: $(echo $SEEN) (default: $DEF)"
	if [ "$(echo $SEEN)" != "$DEF" ]; then
		echo "FAIL: faults.netns.tbf: the server's connections ran '$(echo $SEEN)', not the namespace's default $DEF"
		rc=1
	fi
fi

if [ "$CASE" = loss ]; then
	for ns in "$A" "$B"; do
		n=$(ip netns exec "$ns" nft list chain inet ferryft out 2>/dev/null |
			sed -n 's/.*counter packets \([0-9]*\).*/\1/p')
		echo "# $ns dropped ${n:-?} packets"
	done
fi

kill -TERM "$PEER_PID" 2>/dev/null
prc=-1
for _ in $(seq 150); do
	if ! kill -0 "$PEER_PID" 2>/dev/null; then
		wait "$PEER_PID"
		prc=$?
		break
	fi
	sleep 0.1
done
PEER_PID_DONE=$PEER_PID
PEER_PID=
sed 's/^/# server: /' "$TMP/peer.out"
if [ "$prc" -ne 0 ]; then
	echo "FAIL: faults.netns.$CASE: the server process ended with $prc (leak, lost completion or hang)"
	kill -KILL "$PEER_PID_DONE" 2>/dev/null
	rc=1
fi
exit $rc
