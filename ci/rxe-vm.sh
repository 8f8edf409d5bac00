#!/usr/bin/env bash
# rxe-vm.sh - run one command inside a throw-away qemu VM whose kernel has soft-RoCE
# (rdma_rxe) up on a guest-internal dummy netdev.  Used by ci/softroce.sh; usable alone.
#
#   ci/rxe-vm.sh [options] [--] COMMAND [ARGS...]
#
# The guest boots Debian's kernel (package linux-image-amd64) with a tiny busybox
# initramfs that only mounts the host over virtio-9p and chroots into it:
#   /            host root, read-only (every host binary and library, as on the host)
#   --share DIR  read-write, at the same absolute path (repeatable; CTest's absolute
#                paths keep working)
# Inside the chroot, ci/rxe-guest-init loads the RDMA modules from the host's
# /lib/modules/<guest kernel>, creates dummy0 (IP/24, MTU) and rxe0 on it, waits for
# the port to be ACTIVE and for the RoCE v2 GID of the IP, and runs COMMAND as root
# with `ulimit -l unlimited` in --cwd (default: $PWD if shared, else the first share).
# COMMAND sees RXE_DEV RXE_IP RXE_NETDEV RXE_GID_IDX FERRY_TEST_HOST
# FERRY_TEST_VERBS_DEV FERRY_TEST_VERBS_GID_IDX FERRY_SOFTROCE=vm, plus the host's
# FERRY_* FI_* RDMAV_* IBV_* CTEST_* variables and every --env.
# Guest /tmp, /run, /var/tmp, /root and /dev/shm are guest tmpfs, not the host's.
#
# Options
#   --share DIR       share DIR read-write at the same path (repeatable)
#   --cwd DIR         working directory of COMMAND (must be inside a share or /)
#   --env NAME=VALUE  extra environment for COMMAND (repeatable)
#   --mtu N           dummy0 MTU (default 9000 -> rxe active_mtu 4096; 1500 -> 1024)
#   --ip A.B.C.D      dummy0 address, /24 (default 10.0.0.1)
#   --timeout SECS    hard limit for the whole VM (default $FERRY_SOFTROCE_TIMEOUT or 900);
#                     COMMAND itself gets SECS-60 (guest `timeout`: 124 when hit)
#   --kernel KVER     guest kernel (default $FERRY_SOFTROCE_KERNEL, else the newest
#                     /boot/vmlinuz-KVER whose /lib/modules/KVER has rdma_rxe.ko)
#   --log FILE        keep the whole serial console log (host-relative timestamps)
#   --verbose         echo the boot console to stderr as well
#
# Environment: FERRY_SOFTROCE_ACCEL (default tcg,thread=multi: two busy-polling
# processes need two vCPUs running in parallel), FERRY_SOFTROCE_CPUS (2),
# FERRY_SOFTROCE_MEM (2048 MiB), FERRY_SOFTROCE_TIMEOUT (900), FERRY_SOFTROCE_KERNEL.
#
# Exit status: COMMAND's status, or
#   64 bad usage
#   77 SKIP: qemu / the kernel are missing or qemu cannot start ("SKIP: ..." printed)
#   91 the VM did not boot (kernel panic, 9p share failed, hang/timeout before rxe)
#   92 rxe could not be brought up in the guest (reason and dmesg printed)
#   93 the VM died or hit --timeout while COMMAND ran (no result)
# No network traffic leaves the guest: qemu runs with -nic none.
set -uo pipefail

ME=rxe-vm
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SHARES=() ENVS=() CWD='' MTU=9000 IP=10.0.0.1 KVER=${FERRY_SOFTROCE_KERNEL:-} LOGKEEP='' VERBOSE=0
VM_TIMEOUT=${FERRY_SOFTROCE_TIMEOUT:-900}

log()  { echo "$ME: $*" >&2; }
usage_err() { echo "$ME: $*" >&2; echo "usage: $0 [--share DIR]... [--cwd DIR] [--env N=V]... [--mtu N] [--ip A.B.C.D] [--timeout S] [--kernel KVER] [--log FILE] [--verbose] [--] COMMAND..." >&2; exit 64; }
skip() { echo "SKIP: verbs suite: $*"; exit 77; }
now_us() { echo "${EPOCHREALTIME/./}"; }	# microseconds since the epoch
us2s() { printf '%d.%02d' $(($1/1000000)) $((($1%1000000)/10000)); }

while [ $# -gt 0 ]; do
	case $1 in
	--share)   [ $# -ge 2 ] || usage_err "$1 needs a value"; SHARES+=("$2"); shift 2 ;;
	--cwd)     [ $# -ge 2 ] || usage_err "$1 needs a value"; CWD=$2; shift 2 ;;
	--env)     [ $# -ge 2 ] || usage_err "$1 needs a value"; [[ $2 == [A-Za-z_]*=* ]] || usage_err "--env wants NAME=VALUE"; ENVS+=("$2"); shift 2 ;;
	--mtu)     [ $# -ge 2 ] || usage_err "$1 needs a value"; MTU=$2; shift 2 ;;
	--ip)      [ $# -ge 2 ] || usage_err "$1 needs a value"; IP=$2; shift 2 ;;
	--timeout) [ $# -ge 2 ] || usage_err "$1 needs a value"; VM_TIMEOUT=$2; shift 2 ;;
	--kernel)  [ $# -ge 2 ] || usage_err "$1 needs a value"; KVER=$2; shift 2 ;;
	--log)     [ $# -ge 2 ] || usage_err "$1 needs a value"; LOGKEEP=$2; shift 2 ;;
	--verbose) VERBOSE=1; shift ;;
	--)        shift; break ;;
	-*)        usage_err "unknown option $1" ;;
	*)         break ;;
	esac
done
[ $# -ge 1 ] || usage_err "no COMMAND"
[[ $MTU =~ ^[0-9]+$ ]] && [ "$MTU" -ge 1280 ] || usage_err "--mtu must be a number >= 1280"
[[ $IP =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$ ]] || usage_err "--ip must be an IPv4 address"
[[ $VM_TIMEOUT =~ ^[0-9]+$ ]] && [ "$VM_TIMEOUT" -ge 30 ] || usage_err "--timeout must be >= 30 seconds"
CMD_TIMEOUT=$((VM_TIMEOUT - 60)); [ $CMD_TIMEOUT -ge 20 ] || CMD_TIMEOUT=$((VM_TIMEOUT * 2 / 3))

# ------------------------------------------------------------------ host prerequisites
QEMU_BIN=$(command -v qemu-system-x86_64) || skip "qemu-system-x86_64 not found (package qemu-system-x86)"
BUSYBOX=
for b in /usr/bin/busybox /bin/busybox; do
	# the static build: the initramfs has no libc
	[ -x "$b" ] && ! ldd "$b" >/dev/null 2>&1 && { BUSYBOX=$b; break; }
done
[ -n "$BUSYBOX" ] || skip "no static busybox (package busybox-static)"
command -v cpio >/dev/null || skip "cpio not found"
command -v modprobe >/dev/null || skip "modprobe not found (package kmod)"
if [ -z "$KVER" ]; then
	for d in $(ls -1d /lib/modules/*/ 2>/dev/null | sort -V -r); do
		k=$(basename "$d")
		if [ -r "/boot/vmlinuz-$k" ] && compgen -G "${d}kernel/drivers/infiniband/sw/rxe/rdma_rxe.ko*" >/dev/null; then
			KVER=$k; break
		fi
	done
fi
[ -n "$KVER" ] || skip "no guest kernel with rdma_rxe.ko in /boot + /lib/modules (package linux-image-amd64)"
VMLINUZ=/boot/vmlinuz-$KVER
[ -r "$VMLINUZ" ] || skip "$VMLINUZ is not readable"
[ -r "$HERE/rxe-guest-init" ] || usage_err "$HERE/rxe-guest-init is missing"

# ------------------------------------------------------------------ shares, cwd, command
declare -a SHARE_PATHS=()
for s in "${SHARES[@]}"; do
	p=$(realpath -e "$s" 2>/dev/null) && [ -d "$p" ] || usage_err "--share $s: not a directory"
	[ "$p" = / ] && usage_err "--share /: the root is already shared read-only"
	SHARE_PATHS+=("$p")
done
# parents before children, so that a nested share is mounted over its parent's
mapfile -t SHARE_PATHS < <(printf '%s\n' "${SHARE_PATHS[@]}" | awk 'NF' | sort -u | awk '{print length($0) "\t" $0}' | sort -n | cut -f2-)
in_share() { # PATH -> true when PATH is inside a read-write share
	local s; for s in "${SHARE_PATHS[@]}"; do [[ $1 == "$s" || $1 == "$s"/* ]] && return 0; done; return 1
}
if [ -z "$CWD" ]; then
	if in_share "$PWD"; then CWD=$PWD; else CWD=${SHARE_PATHS[0]:-/}; fi
fi
CWD=$(realpath -m "$CWD")
case $CWD in /tmp|/tmp/*|/run|/run/*|/root|/root/*) in_share "$CWD" || log "warning: --cwd $CWD is a guest tmpfs unless it is shared" ;; esac

WORK=$(mktemp -d "${TMPDIR:-/tmp}/ferry-rxe-vm.XXXXXX") || { log "mktemp failed"; exit 91; }
CTL=$WORK/ctl R=$WORK/root CONSOLE_LOG=$WORK/console.log QERR=$WORK/qemu.stderr
mkdir -p "$CTL" "$R"; : > "$CONSOLE_LOG"
QEMU_PID=
cleanup() {
	[ -n "$QEMU_PID" ] && kill "$QEMU_PID" 2>/dev/null
	[ -n "$LOGKEEP" ] && [ -f "$CONSOLE_LOG" ] && cp "$CONSOLE_LOG" "$LOGKEEP"
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 93' INT TERM HUP

# the command, its environment, and the guest-side setup script travel in the ctl share
{ printf '#!/bin/bash\nexec '; printf '%q ' "$@"; printf '\n'; } > "$CTL/cmd"
{
	for v in $(compgen -e); do
		case $v in FERRY_*|FI_*|RDMAV_*|IBV_*|CTEST_*) printf 'export %s=%q\n' "$v" "${!v}" ;; esac
	done
	for e in "${ENVS[@]}"; do printf 'export %s=%q\n' "${e%%=*}" "${e#*=}"; done
	printf 'FERRY_VM_IP=%q\nFERRY_VM_MTU=%q\nFERRY_VM_CWD=%q\nFERRY_VM_CMD_TIMEOUT=%q\n' \
		"$IP" "$MTU" "$CWD" "$CMD_TIMEOUT"
} > "$CTL/env"
cp "$HERE/rxe-guest-init" "$CTL/guest-init"

# ------------------------------------------------------------------ initramfs
# Only what is needed to reach the host's root over 9p: busybox and the virtio/9p
# modules.  Everything else (kmod, iproute2, rdma-core, ctest, ...) is the host's.
T0=$(now_us)
mkdir -p "$R"/{bin,dev,proc,sys,newroot,lib/modules}
cp "$BUSYBOX" "$R/bin/busybox"
ln -s busybox "$R/bin/sh"
# a console for /init before devtmpfs is mounted (root only; without it /init is
# silent until it mounts devtmpfs, which is harmless)
mknod "$R/dev/console" c 5 1 2>/dev/null
KOS=()
for m in virtio_pci 9pnet_virtio 9p; do
	deps=$(modprobe -S "$KVER" --show-depends "$m" 2>/dev/null) || skip "kernel $KVER has no module $m"
	mapfile -t -O "${#KOS[@]}" KOS < <(awk '$1=="insmod"{print $2}' <<<"$deps")
done
: > "$R/modules.list"
for ko in $(printf '%s\n' "${KOS[@]}" | awk '!seen[$0]++'); do
	dst=/lib/modules/$(basename "$ko"); dst=${dst%.xz}; dst=${dst%.zst}; dst=${dst%.gz}
	case $ko in
	*.ko.xz)  xz -dc "$ko" > "$R$dst" ;;
	*.ko.zst) zstd -qdc "$ko" > "$R$dst" ;;
	*.ko.gz)  gzip -dc "$ko" > "$R$dst" ;;
	*)        cp "$ko" "$R$dst" ;;
	esac || skip "cannot put $ko into the initramfs"
	echo "$dst" >> "$R/modules.list"
done
i=0
: > "$R/shares.list"
for p in "${SHARE_PATHS[@]}"; do echo "share$i $p" >> "$R/shares.list"; i=$((i+1)); done

cat > "$R/init" <<'INIT'
#!/bin/sh
# /init of the soft-RoCE VM (busybox): mount the host over 9p, chroot, run guest-init.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
echo "FERRY_VM_T init $(cut -d' ' -f1 /proc/uptime)"
off() { sync; poweroff -f; sleep 5; echo o > /proc/sysrq-trigger; }
fail() { echo "FERRY_VM_BOOT_FAILED: $*"; dmesg | tail -20; off; }
while read -r ko; do insmod "$ko" || fail "insmod $ko"; done < /modules.list
O=trans=virtio,version=9p2000.L,msize=262144
N=/newroot
# the host root never changes under us during a run: cache it (exec, ld.so, ctest)
mount -t 9p -o "$O,ro,cache=loose" hostroot $N || fail "9p mount of the host root failed"
mount -t proc proc $N/proc || fail "proc in the chroot"
mount -t sysfs sysfs $N/sys || fail "sysfs in the chroot"
mount -t devtmpfs devtmpfs $N/dev || fail "devtmpfs in the chroot"
mkdir -p $N/dev/pts $N/dev/shm
mount -t devpts devpts $N/dev/pts
for d in /dev/shm /tmp /run /var/tmp /root; do
	[ -d $N$d ] && { mount -t tmpfs tmpfs $N$d || fail "tmpfs on $d"; }
done
chmod 1777 $N/tmp $N/var/tmp $N/dev/shm 2>/dev/null
mkdir -p $N/run/ferry-softroce
mount -t 9p -o "$O" ctl $N/run/ferry-softroce || fail "9p mount of the control share failed"
while read -r tag p; do
	mkdir -p "$N$p" 2>/dev/null
	mount -t 9p -o "$O" "$tag" "$N$p" || fail "9p mount of $p failed"
done < /shares.list
echo "FERRY_VM_T root $(cut -d' ' -f1 /proc/uptime)"
chroot $N /bin/bash /run/ferry-softroce/guest-init
rc=$?
echo "FERRY_VM_RC=$rc"
off
INIT
chmod +x "$R/init"
( cd "$R" && find . -print0 | cpio --null -o -H newc --quiet ) > "$WORK/initrd.cpio" || { log "cpio failed"; exit 91; }
T1=$(now_us)

# ------------------------------------------------------------------ boot
APPEND="console=ttyS0,115200 rdinit=/init panic=-1 quiet loglevel=4 mitigations=off"
VIRTFS=(-virtfs "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap,id=hostroot"
        -virtfs "local,path=$CTL,mount_tag=ctl,security_model=none,id=ctl")
i=0
for p in "${SHARE_PATHS[@]}"; do
	VIRTFS+=(-virtfs "local,path=$p,mount_tag=share$i,security_model=none,multidevs=remap,id=share$i")
	i=$((i+1))
done
QEMU=("$QEMU_BIN" -accel "${FERRY_SOFTROCE_ACCEL:-tcg,thread=multi}" -cpu max
      -smp "${FERRY_SOFTROCE_CPUS:-2}" -m "${FERRY_SOFTROCE_MEM:-2048}"
      -nodefaults -nic none -display none -monitor none -serial stdio -no-reboot
      -kernel "$VMLINUZ" -initrd "$WORK/initrd.cpio" -append "$APPEND" "${VIRTFS[@]}")
log "kernel $KVER, initramfs $(du -k "$WORK/initrd.cpio" | cut -f1) KiB in $(us2s $((T1-T0)))s; shares: / (ro) ${SHARE_PATHS[*]}; cwd $CWD; rxe on dummy0 $IP/24 mtu $MTU; timeout ${VM_TIMEOUT}s"

declare -A TM=()
PHASE=boot HELD=0 SEEN_RC='' BOOT_FAIL='' RXE_FAIL='' GOT_OUTPUT=0 RXE_INFO=''
TQ=$(now_us)
exec 3< <(exec timeout -k 10 "$VM_TIMEOUT" "${QEMU[@]}" </dev/null 2>"$QERR")
QEMU_PID=$!
while IFS= read -r line <&3 || [ -n "$line" ]; do
	line=${line%$'\r'}
	now=${EPOCHREALTIME/./}
	GOT_OUTPUT=1
	printf '%s %s\n' "$(us2s $((now-TQ)))" "$line" >> "$CONSOLE_LOG"
	case $line in
	*FERRY_VM_T\ *)  set -- ${line#*FERRY_VM_T }; TM[$1]=$((now-TQ))
	                 [ $VERBOSE = 1 ] && echo "$line" >&2; continue ;;
	*FERRY_VM_CMD_BEGIN*) PHASE=cmd; continue ;;
	*FERRY_VM_CMD_END*)   pre=${line%%FERRY_VM_CMD_END*}; [ -n "$pre" ] && printf '%s\n' "$pre"
	                      while [ $HELD -gt 1 ]; do echo; HELD=$((HELD-1)); done
	                      PHASE=post; continue ;;
	*FERRY_VM_RC=*)  SEEN_RC=${line##*FERRY_VM_RC=}; SEEN_RC=${SEEN_RC%%[!0-9]*}; continue ;;
	*FERRY_VM_BOOT_FAILED:*) BOOT_FAIL=${line#*FERRY_VM_BOOT_FAILED: }; PHASE=fail; echo "$line" >&2; continue ;;
	*FERRY_VM_RXE_FAILED:*)  RXE_FAIL=${line#*FERRY_VM_RXE_FAILED: }; PHASE=fail; echo "$line" >&2; continue ;;
	*"[rxe-vm] rxe0 up"*) RXE_INFO=${line#*\[rxe-vm\] }; echo "$ME: ${RXE_INFO}" >&2; continue ;;
	esac
	if [ $PHASE = cmd ]; then
		# guest-init ends the output with a newline of its own (for output without
		# one): hold back an empty line until we know it is not that one
		if [ -z "$line" ]; then HELD=$((HELD+1)); continue; fi
		while [ $HELD -gt 0 ]; do echo; HELD=$((HELD-1)); done
		# kernel messages on the console (warnings and worse) go to stderr, marked
		if [[ $line =~ ^\[\ *[0-9]+\.[0-9]+\]\  ]]; then echo "[guest-kernel] $line" >&2; else printf '%s\n' "$line"; fi
	elif [ $PHASE = fail ] || [ $VERBOSE = 1 ]; then
		printf '%s\n' "$line" >&2
	fi
done
wait "$QEMU_PID"; QRC=$?
QEMU_PID=
TE=$(now_us)

t() { [ -n "${TM[$1]:-}" ] && us2s "${TM[$1]}" || echo "-"; }
log "timings from qemu start: /init $(t init)s, host root mounted $(t root)s, rxe0 up $(t rxe)s, command done $(t end)s, qemu exit $(us2s $((TE-TQ)))s"
[ -n "${TM[rxe]:-}" ] && [ -n "${TM[end]:-}" ] && log "command wall time $(us2s $((TM[end]-TM[rxe])))s"
tail_console() { echo "---- last console lines:" >&2; tail -n 25 "$CONSOLE_LOG" >&2; }

if [ -n "$BOOT_FAIL" ]; then
	log "ERROR: the VM did not boot: $BOOT_FAIL"; exit 91
fi
if [ -n "$RXE_FAIL" ]; then
	log "ERROR: rxe could not be brought up in the guest: $RXE_FAIL"; exit 92
fi
RC=
[ -f "$CTL/rc" ] && RC=$(tr -dc 0-9 < "$CTL/rc")
if [ -z "$RC" ] && [ "$PHASE" = post ]; then RC=$SEEN_RC; fi
if [ -z "$RC" ]; then
	if [ -z "${TM[init]:-}" ] && [ $GOT_OUTPUT = 0 ] && [ "$QRC" != 0 ] && [ "$QRC" != 124 ] && [ "$QRC" != 137 ]; then
		# qemu failed by itself before the guest printed anything: it could not start
		reason=$(grep -v -e 'warning:' -e '^$' "$QERR" | head -3 | tr '\n' ' ')
		cat "$QERR" >&2
		skip "qemu-system-x86_64 could not start (rc=$QRC): ${reason:-no message}"
	fi
	[ -s "$QERR" ] && { echo "---- qemu stderr:" >&2; grep -v 'warning: TCG doesn.t support' "$QERR" | tail -5 >&2; }
	if [ "$QRC" = 124 ] || [ "$QRC" = 137 ]; then why="hit the ${VM_TIMEOUT}s timeout (FERRY_SOFTROCE_TIMEOUT)"; else why="ended (qemu rc=$QRC)"; fi
	if [ -z "${TM[rxe]:-}" ]; then
		tail_console; log "ERROR: the VM did not boot: it $why before rxe was up"; exit 91
	fi
	tail_console; log "ERROR: the VM $why while the command ran, without a result"; exit 93
fi
exit "$RC"
