# shellcheck shell=sh
# %postun scriptlet of the apiserver-guard .rpm: makes systemd forget removed
# or changed units and, on upgrade ($1 >= 1 packages left), restarts the units
# that are running so they use the new binary (the block stays in place
# meanwhile: both units are fail-closed).
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -ge 1 ]; then
        systemctl try-restart apiserver-guard.service apiserver-guard-apply.service >/dev/null 2>&1 || :
    fi
fi
