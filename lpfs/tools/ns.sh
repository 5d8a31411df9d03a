#!/usr/bin/env bash
# lpfs ns [--mount M] [lpfs mount options] -- COMMAND [ARGS...]
#
# Run COMMAND in a private mount namespace in which the emulation *is* the
# kernel: /sys/kernel/livepatch and /sys/module/<mod> are lpfs's; insmod,
# rmmod, modprobe, modinfo, lsmod, depmod, kmod, dmesg and uname are lpfs's
# stand-ins, on PATH and at the absolute paths kmod, util-linux and
# coreutils use (whether or not the host has those tools); /dev/kmsg,
# /proc/cmdline, /proc/meminfo, /proc/modules, /proc/version, /proc/kallsyms,
# the modules' /proc entries, /proc/sys/kernel/tainted,
# /proc/sys/kernel/ftrace_enabled, dynamic_debug/control and the tracing and
# kprobes files answer from the daemon; /lib/modules/$(uname -r)/build
# exists. Without --mount a daemon is started for COMMAND (with the given
# lpfs mount options) and stopped after it. The host's own mounts never
# change; the host's files bound back into the namespace (its other
# /sys/kernel, /sys/module and /proc/sys entries) stay writable by root, as
# they are outside it.
#
# Run by `lpfs ns`, which sets LPFS_PYTHON to the interpreter that has lpfs.
# Exit codes: COMMAND's; 2 usage; 1 the namespace could not be set up.
set -eu

me="lpfs ns"
python=${LPFS_PYTHON:?run this as lpfs ns}
die() { echo "$me: $*" >&2; exit "${2:-1}"; }

# bind_over SOURCE TARGET: TARGET shows SOURCE, if TARGET exists at all.
bind_over() {
	[ -e "$2" ] || return 0
	mount --bind "$1" "$2"
}

# /sys/kernel is nsfs's kernel/ directory (see lpfs/daemon/nskernel.py for why not
# a tmpfs): each of the host's entries nsfs lists as a stub is bound back over
# it, and livepatch is the mount's; the modules' own kobjects are nsfs's
# symlinks into the mount, there as soon as a module adds one. tracing/ and
# debug/'s tracing/, kprobes/ and dynamic_debug/ are nsfs's own, so nothing a
# script sets there reaches the host's tracing.
shadow_sys_kernel() {
	local stage=$1 stub
	mount --bind "$stage/ns/kernel" /sys/kernel
	while IFS= read -r stub; do
		if [ "$stub" = kernel/livepatch ]; then
			mount --bind "$LPFS_MOUNT/kernel/livepatch" "/sys/$stub"
		else
			mount --rbind "$stage/host-kernel/${stub#kernel/}" "/sys/$stub"
		fi
	done < <(grep '^kernel/' "$stage/ns/stubs")
}

# /proc is nsfs's proc/ directory (see lpfs/daemon/nsproc.py): the real procfs, with
# the files already laid over it, goes aside to real-proc; its pids are
# nsfs's symlinks there, and each of its fixed entries is bound back over
# nsfs's stub. lpfs's own files are nsfs's. Last, since every later look into
# /proc passes through nsfs.
shadow_proc() {
	local stage=$1 stub
	mount --rbind /proc "$stage/real-proc"
	grep '^proc/' "$stage/ns/stubs" >"$stage/proc-stubs" || true
	mount --bind "$stage/ns/proc" /proc
	while IFS= read -r stub; do
		mount --rbind "$stage/real-proc/${stub#proc/}" "/$stub"
	done <"$stage/proc-stubs"
}

# has_submounts DIR: something is mounted below DIR, which an overlay of DIR
# would hide.
has_submounts() {
	awk -v dir="$1/" 'index($5, dir) == 1 { found = 1 } END { exit !found }' /proc/self/mountinfo
}

# layer_over STAGE DIR LAYER: DIR shows LAYER's entries in front of its own,
# in this namespace only. An overlay where one can be made; where not
# (overlays stack at most two deep, and the root is one in most containers),
# or where DIR has mounts below it that an overlay would hide, a tmpfs with
# DIR's own entries bound back. The tmpfs is filled aside and moved into
# place whole: DIR may hold the very tools that fill it.
layer_over() {
	local stage=$1 dir=$2 layer=$3 host new entry name
	if ! has_submounts "$dir" &&
		mount -t overlay lpfs-layer -o "lowerdir=$layer:$dir" "$dir" 2>/dev/null; then
		return 0
	fi
	host=$(mktemp -d "$stage/host.XXXXXX") new=$(mktemp -d "$stage/new.XXXXXX")
	mount --rbind "$dir" "$host"
	mount -t tmpfs -o "mode=$(stat -c %a "$host")" lpfs-layer "$new"
	cp -a "$layer/." "$new/"
	shopt -s dotglob nullglob
	for entry in "$host"/*; do
		name=${entry##*/}
		if [ -e "$new/$name" ] || [ -L "$new/$name" ]; then
			continue # the layer's entry stands in front
		elif [ -L "$entry" ]; then
			cp -P "$entry" "$new/$name"
		elif [ -d "$entry" ]; then
			mkdir "$new/$name"
			mount --rbind "$entry" "$new/$name"
		else
			touch "$new/$name"
			mount --bind "$entry" "$new/$name"
		fi
	done
	shopt -u dotglob nullglob
	mount --move "$new" "$dir"
}

# /lib/modules/RELEASE/build, for scripts that check KDIR: made in the
# deepest directory of that path that exists.
add_module_build_dir() {
	local stage=$1 release=$2 dir rest layer
	dir=$(realpath /lib) rest=modules/$release/build
	[ ! -e "$dir/$rest" ] || return 0
	while [ -d "$dir/${rest%%/*}" ]; do
		dir=$dir/${rest%%/*} rest=${rest#*/}
	done
	layer=$(mktemp -d "$stage/layer.XXXXXX")
	mkdir -p "$layer/$rest"
	layer_over "$stage" "$dir" "$layer"
}

# The tools lpfs stands in for, by the directory kmod, util-linux and
# coreutils install them in. /sbin and /bin are the same directories on a
# merged-/usr host and real ones elsewhere; either way each directory gets
# one layer.
SBIN_TOOLS="insmod rmmod modprobe modinfo lsmod depmod"
BIN_TOOLS="lsmod kmod dmesg uname"

install_stand_ins() {
	local stage=$1 dir real tool layer
	local -A tools=()
	mkdir -p "$stage/bin"
	touch "$stage/real-uname"
	mount --bind "$(realpath "$(command -v uname)")" "$stage/real-uname"
	cat >"$stage/bin/lpfs-stand-in" <<-SCRIPT
		#!/bin/sh
		# Called by the name of the tool it stands in for.
		LPFS_MOUNT='$LPFS_MOUNT' LPFS_REAL_UNAME='$stage/real-uname' exec '$python' -m lpfs.tools.shims "\$0" "\$@"
	SCRIPT
	cat >"$stage/bin/lpfs" <<-SCRIPT
		#!/bin/sh
		LPFS_MOUNT='$LPFS_MOUNT' exec '$python' -m lpfs "\$@"
	SCRIPT
	chmod 755 "$stage/bin/lpfs-stand-in" "$stage/bin/lpfs"
	for tool in $SBIN_TOOLS $BIN_TOOLS; do
		[ -e "$stage/bin/$tool" ] || ln -s lpfs-stand-in "$stage/bin/$tool"
	done
	for dir in /usr/sbin /sbin /usr/bin /bin; do
		[ -d "$dir" ] || continue
		real=$(realpath "$dir")
		case $dir in
		*/sbin) tools[$real]="${tools[$real]:-} $SBIN_TOOLS" ;;
		*) tools[$real]="${tools[$real]:-} $BIN_TOOLS" ;;
		esac
	done
	for real in "${!tools[@]}"; do
		layer=$(mktemp -d "$stage/layer.XXXXXX")
		for tool in ${tools[$real]}; do
			ln -sfn "$stage/bin/lpfs-stand-in" "$layer/$tool"
		done
		layer_over "$stage" "$real" "$layer"
	done
}

inside() {
	local stage=$1 release nsfs_pid status
	shift
	# Only ever in the namespace main() made: these binds must never reach the host.
	if [ -z "${LPFS_NS_PARENT:-}" ] || [ "$(readlink /proc/self/ns/mnt)" = "$LPFS_NS_PARENT" ]; then
		die "--inside runs only in the mount namespace lpfs ns makes"
	fi
	mkdir -p "$stage/ns" "$stage/host-module" "$stage/host-kernel" "$stage/real-proc"
	mount --bind /sys/module "$stage/host-module"
	mount --rbind /sys/kernel "$stage/host-kernel"
	"$python" -m lpfs.daemon.nsfs "$stage/ns" --mount "$LPFS_MOUNT" \
		--host-modules "$stage/host-module" --host-kernel "$stage/host-kernel" \
		--real-proc "$stage/real-proc" &
	nsfs_pid=$!
	# shellcheck disable=SC2064 # expand now: this run's nsfs
	trap "kill $nsfs_pid 2>/dev/null || true" EXIT
	for _ in $(seq 200); do
		[ ! -e "$stage/ns/kmsg" ] || break
		sleep 0.05
	done
	[ -e "$stage/ns/kmsg" ] || die "the namespace files did not come up"
	release=$("$python" -m lpfs status --json --mount "$LPFS_MOUNT" \
		| "$python" -c 'import json, sys; print(json.load(sys.stdin)["kernel"])')

	shadow_sys_kernel "$stage"
	mount --bind "$stage/ns/module" /sys/module
	bind_over "$stage/ns/kmsg" /dev/kmsg
	bind_over "$stage/ns/tainted" /proc/sys/kernel/tainted
	bind_over "$stage/ns/ftrace_enabled" /proc/sys/kernel/ftrace_enabled
	add_module_build_dir "$stage" "$release"
	install_stand_ins "$stage"
	shadow_proc "$stage"

	status=0
	PATH="$stage/bin:$PATH" "$@" || status=$?
	# The real procfs back first: nsfs reads /proc/self/mountinfo as it unmounts.
	umount -l /proc
	exit "$status"
}

main() {
	local mount="" stage started=""
	local -a options=()
	if [ "${1:-}" = --inside ]; then
		shift
		inside "$@"
	fi
	while [ $# -gt 0 ]; do
		case $1 in
		--mount) mount=${2:?--mount needs a mountpoint}; shift 2 ;;
		--mount=*) mount=${1#*=}; shift ;;
		--) shift; break ;;
		*) options+=("$1"); shift ;;
		esac
	done
	[ $# -gt 0 ] || die "usage: $me [--mount M] [lpfs mount options] -- COMMAND [ARGS...]" 2
	[ "$(id -u)" = 0 ] || die "needs root: it makes a mount namespace and bind mounts"
	command -v unshare >/dev/null || die "unshare (util-linux) is missing"
	stage=$(mktemp -d /tmp/lpfs-ns.XXXXXX)
	# shellcheck disable=SC2064 # expand now: these are this run's paths
	trap "[ -z \"\$started\" ] || '$python' -m lpfs umount '$stage/sys' >/dev/null 2>&1 || true; rm -rf --one-file-system '$stage'" EXIT
	if [ -z "$mount" ]; then
		mkdir "$stage/sys"
		"$python" -m lpfs mount "$stage/sys" --daemon ${options[@]+"${options[@]}"} \
			|| die "could not start a daemon"
		started=1
		mount=$stage/sys
	elif [ ${#options[@]} -gt 0 ]; then
		die "mount options go with a daemon of its own, not with --mount" 2
	fi
	LPFS_MOUNT=$(realpath "$mount")
	export LPFS_MOUNT
	"$python" -m lpfs status --mount "$LPFS_MOUNT" >/dev/null \
		|| die "no lpfs daemon serves $mount"
	LPFS_NS_PARENT=$(readlink /proc/self/ns/mnt)
	export LPFS_NS_PARENT
	status=0
	unshare --mount --propagation private -- "$BASH" "$0" --inside "$stage" "$@" || status=$?
	exit "$status"
}

main "$@"
