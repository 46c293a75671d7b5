# shellcheck shell=sh
# %preun scriptlet of the apiserver-guard .rpm: on erase ($1 = 0 packages left),
# stops the units so no daemon outlives its package. The firewall block stays
# in the kernel (fail-closed, unless the config sets cleanup_on_exit); run
# `apiserver-guard remove` before erasing the package to take it out.
if [ "$1" -eq 0 ] && [ -d /run/systemd/system ]; then
    systemctl stop apiserver-guard.service apiserver-guard-apply.service >/dev/null 2>&1 || :
fi
