# sandbox-gateway post-install (shared by the .deb and the .rpm): a random
# bearer token when there is none, then the unit enabled; started only where
# systemd runs (not in an image build or a chroot). Honours $DPKG_ROOT.
root=${DPKG_ROOT:-}
token=$root/etc/sandbox-gateway/token
if [ ! -e "$token" ]; then
    (umask 077 && od -An -N32 -tx1 /dev/urandom | tr -d ' \n' >"$token")
    chmod 0600 "$token"
fi
if command -v systemctl >/dev/null 2>&1; then
    if [ -n "$root" ]; then
        systemctl --root="$root" enable sandbox-gateway.service >/dev/null 2>&1 || true
    else
        systemctl enable sandbox-gateway.service >/dev/null 2>&1 || true
        if [ -d /run/systemd/system ]; then
            systemctl daemon-reload || true
            systemctl restart sandbox-gateway.service || true
        fi
    fi
fi
