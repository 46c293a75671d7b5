# shellcheck shell=sh
# %post scriptlet of the apiserver-guard .rpm (cargo-generate-rpm reads this
# file; rpm runs it with /bin/sh): creates /run/xtables.lock (the units see
# /run read-only, so it must exist; at boot tmpfiles.d does this) and makes
# systemd load the new or changed units. Enables and starts nothing: see
# /etc/apiserver-guard/config.toml.
if [ -d /run/systemd/system ]; then
    systemd-tmpfiles --create apiserver-guard.conf >/dev/null 2>&1 || :
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
