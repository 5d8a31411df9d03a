#!/bin/bash
# A small functions.sh-style harness, as the kernel's livepatch selftests drive
# a kernel: everything goes through the real paths (/sys/kernel/livepatch,
# /sys/module, /dev/kmsg, dmesg, insmod, rmmod, modinfo, sysctl).
set -u
SYSFS_KLP_DIR=/sys/kernel/livepatch

log() { echo "$1" > /dev/kmsg; }
die() { log "ERROR: $1"; echo "ERROR: $1" >&2; exit 1; }

loop_until() {
	local cmd=$1 i
	for i in $(seq 300); do
		eval "$cmd" && return 0
		sleep 0.05
	done
	return 1
}

set_dynamic_debug() {
	cat <<-EOF > /sys/kernel/debug/dynamic_debug/control
		file kernel/livepatch/* +p
		func klp_try_switch_task -p
	EOF
}

is_livepatch_mod() { modinfo "test_modules/$1.ko" | grep -q "^livepatch:\s*Y"; }

__load_mod() {
	local mod=$1 out
	shift
	log "$(echo "% insmod test_modules/$mod.ko $*" | sed 's/ *$//')"
	out=$(insmod "test_modules/$mod.ko" "$@" 2>&1)
	[ -z "$out" ] || die "$out"
	loop_until "[[ -e /sys/module/$mod ]]" || die "failed to load module $mod"
}

load_mod() { is_livepatch_mod "$1" && die "use load_lp() for $1"; __load_mod "$@"; }

load_lp() {
	local mod=$1
	is_livepatch_mod "$mod" || die "module $mod is not a livepatch"
	__load_mod "$@"
	loop_until "[[ -e $SYSFS_KLP_DIR/$mod ]]" || die "failed to load module $mod (sysfs)"
	loop_until "grep -q '^0$' $SYSFS_KLP_DIR/$mod/transition" || die "failed to complete transition"
}

load_failing_mod() {
	local mod=$1 out
	shift
	log "$(echo "% insmod test_modules/$mod.ko $*" | sed 's/ *$//')"
	out=$(insmod "test_modules/$mod.ko" "$@" 2>&1) && die "$mod unexpectedly loaded"
	log "$out"
}

unload_mod() {
	local mod=$1 out
	loop_until "[[ \$(cat /sys/module/$mod/refcnt) == 0 ]]" || die "failed to unload module $mod (refcnt)"
	log "% rmmod $mod"
	out=$(rmmod "$mod" 2>&1)
	[ -z "$out" ] || die "$out"
	loop_until "[[ ! -e /sys/module/$mod ]]" || die "failed to unload module $mod (/sys/module)"
}

disable_lp() {
	log "% echo 0 > $SYSFS_KLP_DIR/$1/enabled"
	echo 0 > "$SYSFS_KLP_DIR/$1/enabled"
	loop_until "[[ ! -e $SYSFS_KLP_DIR/$1 ]]" || die "failed to disable livepatch $1"
}

start_test() {
	local canary="livepatch kselftest timestamp: $(date --rfc-3339=ns)"
	log "$canary"
	loop_until 'dmesg | grep -q "$canary"' || die "no canary in dmesg"
	LAST_DMESG=$(dmesg | grep "$canary")
	log "===== TEST: $1 ====="
}

check_result() {
	local result
	result=$(dmesg | awk -v last="$LAST_DMESG" 'p; $0 == last {p=1}' \
		| grep -e 'livepatch:' -e 'test_klp' | grep -v '\(tainting\|taints\) kernel' \
		| sed 's/^\[[ 0-9.]*\] //')
	if [ "$result" = "$1" ]; then
		echo "ok"
	else
		echo "not ok"
		diff <(echo "$1") <(echo "$result")
		exit 1
	fi
}
