#!/usr/bin/env bash
# The real reboot test of apiserver-guard (issue 5, item 5). Builds a Debian
# bookworm minbase image (debootstrap from the mirror apt uses here; the
# rootfs is cached as a tarball under target/vm-cache/), copies the .deb and
# the test's guest files (tests/vm/guest/) in, and boots it under
# qemu-system-x86_64 (software emulation) three times with real in-guest
# reboots: boot 0 installs the .deb with dpkg -i under the running systemd,
# configures and enables apiserver-guard; boots 1 and 2 check that the block
# was in the kernel before the stand-in kubelet.service started, exactly one
# copy, the unit active (and its exposure); boot 1 also checks that
# `nft flush ruleset` is repaired. Prints the guest's "AGVM:" verdict lines
# and the time of each phase; exits 0 only if every check passed. Times out
# on its own, always kills qemu and removes its temporary files.
#
# Usage (as root): tests/vm/run.sh [path/to/apiserver-guard_*.deb]
#   without an argument: the .deb in target/packages/, built with
#   scripts/build-packages.sh if there is none (AGVM_BUILD=1: always build).
# Environment: AGVM_TIMEOUT (seconds for the VM part, default 360),
#   AGVM_MIRROR (default: the bookworm URI of this machine's apt sources).
# Output kept in target/vm-test/: console.log and the guest's /var/lib/agvm.
set -euo pipefail
deb=${1:+$(realpath -e -- "$1")} || { echo "tests/vm/run.sh: no such file: $1" >&2; exit 1; }
cd "$(dirname "$0")/../.."
repo=$PWD

timeout_s=${AGVM_TIMEOUT:-360}
suite=bookworm
base_include="systemd-sysv udev nftables iproute2 linux-image-amd64 initramfs-tools zstd iptables"
# Bump when the cached rootfs recipe below changes.
recipe=2
cache_dir=$repo/target/vm-cache
out_dir=$repo/target/vm-test

t_start=$EPOCHREALTIME
phases=()
phase_t=$t_start
# phase NAME: records the time since the previous phase mark.
phase() {
    local now=$EPOCHREALTIME
    phases+=("$(printf '%-44s %7.1f s' "$1" "$(awk -v a="$phase_t" -v b="$now" 'BEGIN { print b - a }')")")
    phase_t=$now
}
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }
die() {
    echo "tests/vm/run.sh: $*" >&2
    exit 1
}

[ "$(id -u)" -eq 0 ] || die "run as root (debootstrap, image ownership)"
for tool in qemu-system-x86_64:qemu-system-x86 debootstrap:debootstrap mkfs.ext4:e2fsprogs debugfs:e2fsprogs zstd:zstd; do
    command -v "${tool%%:*}" >/dev/null ||
        die "${tool%%:*} missing: apt-get install -y ${tool#*:}"
done

# --- The mirror: the URI apt uses here for the bookworm suite.
mirror_from_apt() {
    local f
    # deb822 (.sources): the URIs of a stanza whose Suites include bookworm.
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        awk -v suite="$suite" '
            /^[[:space:]]*$/ { if (uri != "" && hit) { print uri; exit } uri = ""; hit = 0; next }
            tolower($1) == "uris:" { uri = $2 }
            tolower($1) == "suites:" { for (i = 2; i <= NF; i++) if ($i == suite) hit = 1 }
            END { if (uri != "" && hit) print uri }' "$f"
    done
    # One-line format: deb [options] URI SUITE COMPONENTS...
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        sed -E 's/\[[^]]*\]//' "$f" | awk -v suite="$suite" '$1 == "deb" && $3 == suite { print $2 }'
    done
}
mirror=${AGVM_MIRROR:-$(mirror_from_apt | head -n 1)}
[ -n "$mirror" ] || die "no $suite source in /etc/apt/sources*; set AGVM_MIRROR"

# --- The package.
if [ -z "$deb" ]; then
    deb=$(find target/packages -maxdepth 1 -name 'apiserver-guard_*_amd64.deb' 2>/dev/null | sort | tail -n 1)
    if [ -z "$deb" ] || [ "${AGVM_BUILD:-0}" = 1 ]; then
        echo "== building the packages (scripts/build-packages.sh)"
        scripts/build-packages.sh
        deb=$(find target/packages -maxdepth 1 -name 'apiserver-guard_*_amd64.deb' | sort | tail -n 1)
    fi
fi
[ -f "$deb" ] || die "no .deb: $deb"
echo "== package: $deb ($(dpkg-deb -f "$deb" Version))"
# dpkg -i in the guest has no apt to fetch dependencies: the image gets the
# package's Depends (first alternative of each) and nothing it does not
# declare, so an undeclared dependency shows up as a failing check.
depends=$(dpkg-deb -f "$deb" Depends | tr ',' '\n' | sed -E 's/\|.*//; s/\(.*\)//; s/:any//; s/[[:space:]]//g')
include=$({ tr ' ' '\n' <<<"$base_include" && printf '%s\n' "$depends"; } | sed '/^$/d' | sort -u | paste -sd, -)
phase "package located/built"

work=$(mktemp -d /tmp/apiserver-guard-vm.XXXXXX)
qemu_pid=
# shellcheck disable=SC2317 # invoked by the EXIT trap
cleanup() {
    if [ -n "$qemu_pid" ] && kill -0 "$qemu_pid" 2>/dev/null; then
        kill "$qemu_pid" 2>/dev/null || true
        for _ in 1 2 3 4 5 6 7 8 9 10; do
            kill -0 "$qemu_pid" 2>/dev/null || break
            sleep 0.5
        done
        kill -9 "$qemu_pid" 2>/dev/null || true
        wait "$qemu_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- The debootstrapped rootfs, cached as a tarball.
key=$(printf '%s\n' "$suite" "$include" "$recipe" | sha256sum | cut -c1-12)
tarball=$cache_dir/rootfs-$suite-minbase-$key.tar.zst
if [ -f "$tarball" ]; then
    echo "== rootfs: cached $tarball"
else
    echo "== rootfs: debootstrap --variant=minbase $suite from $mirror (about a minute)"
    mkdir -p "$cache_dir"
    build=$work/debootstrap
    if ! timeout 1200 debootstrap --variant=minbase --include="$include" "$suite" "$build" "$mirror" \
        >"$work/debootstrap.log" 2>&1; then
        tail -n 30 "$work/debootstrap.log" >&2
        die "debootstrap failed (log above)"
    fi
    chroot "$build" apt-get clean
    # Kernel modules the test cannot use (graphics, sound, media, wireless,
    # InfiniBand, staging drivers): a third of the image. The initrd keeps
    # its own copies; netfilter/nf_tables stay.
    kdir=$(find "$build/lib/modules" -mindepth 1 -maxdepth 1 -type d | head -n 1)/kernel
    rm -rf "$kdir/drivers/gpu" "$kdir/sound" "$kdir/drivers/media" "$kdir/drivers/net/wireless" \
        "$kdir/drivers/infiniband" "$kdir/drivers/staging" "$kdir/net/wireless" "$kdir/net/mac80211" \
        "$kdir/drivers/bluetooth" "$kdir/net/bluetooth" "$kdir/drivers/iio" "$kdir/drivers/isdn"
    kver=$(basename "$(dirname "$kdir")")
    chroot "$build" depmod -a "$kver"
    # A small initrd (about 30 MB with MODULES=most): only what mounts the
    # root file system of this VM (virtio disk, ext4). Faster to load and
    # unpack under emulation, at every boot.
    sed -i 's/^MODULES=.*/MODULES=list/; s/^FSTYPE=.*/FSTYPE=ext4/' "$build/etc/initramfs-tools/initramfs.conf"
    printf '%s\n' virtio_pci virtio_blk ext4 >>"$build/etc/initramfs-tools/modules"
    chroot "$build" update-initramfs -u -k "$kver" >>"$work/debootstrap.log" 2>&1
    tar -C "$build" --numeric-owner --xattrs -cf - . | zstd -q -T0 -3 -o "$tarball.tmp"
    mv "$tarball.tmp" "$tarball"
    # Keep the three newest rootfs tarballs (package sets differ by the .deb's Depends).
    find "$cache_dir" -maxdepth 1 -name "rootfs-$suite-minbase-*.tar.zst" -printf '%T@ %p\n' |
        sort -rn | tail -n +4 | cut -d' ' -f2- | xargs -r rm -f
    rm -rf "$build"
fi
phase "rootfs (debootstrap or cache)"

# --- The image: the cached rootfs, made bootable and unattended, plus the
# package and the test's guest files.
root=$work/rootfs
mkdir "$root"
zstd -q -d -c "$tarball" | tar -C "$root" --numeric-owner --xattrs -xf -
echo agvm >"$root/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 agvm\n::1 localhost\n' >"$root/etc/hosts"
rm -f "$root/etc/resolv.conf"
echo '/dev/vda / ext4 rw,errors=remount-ro 0 0' >"$root/etc/fstab"
etc_sd=$root/etc/systemd/system
ln -sf /dev/null "$etc_sd/serial-getty@ttyS0.service" # the console is the test's
ln -sf /dev/null "$etc_sd/getty@tty1.service"
install -m 0755 tests/vm/guest/agvm-check tests/vm/guest/agvm-kubelet-stub "$root/usr/local/sbin/"
install -m 0644 tests/vm/guest/kubelet.service tests/vm/guest/agvm-check.service "$etc_sd/"
mkdir -p "$etc_sd/multi-user.target.wants" "$root/usr/local/share/agvm" "$root/var/lib/agvm"
ln -sf ../kubelet.service "$etc_sd/multi-user.target.wants/kubelet.service"
ln -sf ../agvm-check.service "$etc_sd/multi-user.target.wants/agvm-check.service"
install -m 0644 tests/vm/guest/config.toml "$root/usr/local/share/agvm/config.toml"
install -m 0644 "$deb" "$root/root/apiserver-guard.deb"
echo 0 >"$root/var/lib/agvm/stage"
kernel=$(find "$root/boot" -maxdepth 1 -name 'vmlinuz-*' | sort -V | tail -n 1)
if [ -z "$kernel" ] || [ ! -f "$root/boot/initrd.img-${kernel##*/vmlinuz-}" ]; then
    die "no kernel/initrd in the rootfs /boot"
fi
cp "$kernel" "$work/vmlinuz"
cp "$root/boot/initrd.img-${kernel##*/vmlinuz-}" "$work/initrd.img"
size_mb=$(($(du -sm "$root" | cut -f1) + 512))
truncate -s "${size_mb}M" "$work/disk.raw"
mkfs.ext4 -q -F -L root -d "$root" "$work/disk.raw"
rm -rf "$root"
phase "image (unpack, customise, mkfs.ext4 -d)"

# --- Boot. No -no-reboot: an in-guest reboot resets the VM in place; the
# guest's poweroff ends qemu. No NIC: the guest needs no network.
rm -rf "$out_dir"
mkdir -p "$out_dir"
log=$work/console.log
: >"$log"
echo "== booting under qemu (tcg; timeout ${timeout_s}s)"
qemu-system-x86_64 -nodefaults -no-user-config -accel tcg -smp 2 -m 1024 \
    -display none -monitor none -serial "file:$log" \
    -kernel "$work/vmlinuz" -initrd "$work/initrd.img" \
    -append "root=/dev/vda rw console=ttyS0 quiet" \
    -drive "file=$work/disk.raw,format=raw,if=virtio" </dev/null &
qemu_pid=$!
t_vm=$EPOCHREALTIME

printed=0
timed_out=0
declare -A mark=()
# Prints the new complete AGVM lines of the console with the time since qemu
# started, and marks the phase boundaries.
scan() {
    local total line key
    total=$(wc -l <"$log")
    [ "$total" -gt "$printed" ] || return 0
    while IFS= read -r line; do
        line=${line//$'\r'/}
        case $line in
        *AGVM:* | *AGVM-*:*)
            line=AGVM${line#*AGVM}
            printf '[%6ss] %s\n' "$(since "$t_vm")" "$line"
            key=
            case $line in
            "AGVM: boot0 kubelet-start"*) key=boot0-up ;;
            "AGVM: STAGE boot0 done"*) key=boot0-done ;;
            "AGVM: boot1 kubelet-start"*) key=boot1-up ;;
            "AGVM: STAGE boot1 done"*) key=boot1-done ;;
            "AGVM: boot2 kubelet-start"*) key=boot2-up ;;
            "AGVM: DONE"*) key=finished ;;
            esac
            if [ -n "$key" ] && [ -z "${mark[$key]:-}" ]; then mark[$key]=$EPOCHREALTIME; fi
            ;;
        esac
    done < <(head -n "$total" "$log" | tail -n +"$((printed + 1))")
    printed=$total
}
while kill -0 "$qemu_pid" 2>/dev/null; do
    scan
    if [ "$(since "$t_vm" | cut -d. -f1)" -ge "$timeout_s" ]; then
        timed_out=1
        break
    fi
    sleep 0.2
done
scan
if [ "$timed_out" = 1 ]; then
    echo "== TIMEOUT after ${timeout_s}s: killing qemu; last console lines:"
    kill "$qemu_pid" 2>/dev/null || true
    wait "$qemu_pid" 2>/dev/null || true
    tail -n 40 "$log" | tr -d '\r' | sed 's/^/   | /'
else
    wait "$qemu_pid" 2>/dev/null || true
fi
qemu_pid=
t_end=$EPOCHREALTIME

# The VM phases, from the console marks.
vm_phase() { # vm_phase NAME FROM TO
    local a=${mark[$2]:-} b=${mark[$3]:-}
    [ "$2" = start ] && a=$t_vm
    [ "$3" = end ] && b=$t_end
    if [ -n "$a" ] && [ -n "$b" ]; then
        phases+=("$(printf '%-44s %7.1f s' "$1" "$(awk -v a="$a" -v b="$b" 'BEGIN { print b - a }')")")
    else
        phases+=("$(printf '%-44s %9s' "$1" "n/a")")
    fi
}
phase_t=$t_vm
phase "VM total (3 boots, from qemu start)"
vm_phase "  boot 0: qemu start to kubelet stand-in" start boot0-up
vm_phase "  boot 0: dpkg -i, configure, enable" boot0-up boot0-done
vm_phase "  reboot 1: to kubelet stand-in" boot0-done boot1-up
vm_phase "  boot 1: checks, flush and repair" boot1-up boot1-done
vm_phase "  reboot 2: to kubelet stand-in" boot1-done boot2-up
vm_phase "  boot 2: checks" boot2-up finished
vm_phase "  poweroff" finished end

# Keep the evidence: the console and the guest's records (read from the
# image with debugfs, no mount).
tr -d '\r' <"$log" >"$out_dir/console.log"
debugfs -R "rdump /var/lib/agvm $out_dir" "$work/disk.raw" >/dev/null 2>&1 || true

required="boot0/control-absent boot0/dpkg-install boot0/enables-nothing boot0/enable
boot1/kubelet-saw-block boot1/ready-before-kubelet boot1/active boot1/one-copy boot1/exposure boot1/flush-repaired boot1/one-copy-after-repair
boot2/real-reboot boot2/kubelet-saw-block boot2/ready-before-kubelet boot2/active boot2/one-copy boot2/exposure"
verdicts=$(tr -d '\r' <"$out_dir/console.log" | sed -n 's/.*\(AGVM: \(PASS\|FAIL\) .*\)/\1/p')
missing=()
for id in $required; do
    grep -q "^AGVM: PASS $id " <<<"$verdicts" || missing+=("$id")
done
passed=$(grep -c '^AGVM: PASS' <<<"$verdicts" || true)
failed=$(grep -c '^AGVM: FAIL' <<<"$verdicts" || true)

echo
echo "== timings"
printf '   %s\n' "${phases[@]}"
printf '   %-44s %7.1f s\n' "total" "$(awk -v a="$t_start" -v b="$EPOCHREALTIME" 'BEGIN { print b - a }')"
echo "== console and guest records: $out_dir"
if [ "$timed_out" = 0 ] && [ "$failed" -eq 0 ] && [ "${#missing[@]}" -eq 0 ] &&
    grep -q '^AGVM: DONE boot2' <<<"$(tr -d '\r' <"$out_dir/console.log" | sed -n 's/.*\(AGVM: DONE.*\)/\1/p')"; then
    echo "== PASS: $passed checks passed over 3 boots"
    exit 0
fi
echo "== FAIL: $failed failed, ${#missing[@]} required check(s) missing${missing[*]:+ (${missing[*]})}$([ "$timed_out" = 1 ] && echo ', timed out')"
exit 1
