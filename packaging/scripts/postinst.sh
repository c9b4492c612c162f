# sandbox-agent: after installing or upgrading (shared by the .deb postinst and
# the .rpm %post). Idempotent. $DPKG_ROOT (set by dpkg --root, empty
# otherwise) is the root file system the package is installed into.
root=${DPKG_ROOT:-}

# The sandbox user vercel-sandbox (uid/gid 1000), as sysusers.d says.
if command -v systemd-sysusers >/dev/null 2>&1; then
    systemd-sysusers ${root:+--root="$root"} "$root/usr/lib/sysusers.d/sandbox-agent.conf"
elif ! grep -q '^vercel-sandbox:' "$root/etc/passwd" 2>/dev/null; then
    if command -v useradd >/dev/null 2>&1; then
        grep -q '^vercel-sandbox:' "$root/etc/group" 2>/dev/null ||
            groupadd ${root:+--prefix "$root"} -g 1000 vercel-sandbox 2>/dev/null ||
            groupadd ${root:+--prefix "$root"} vercel-sandbox
        shell=/bin/bash
        [ -x "$root$shell" ] || shell=/bin/sh
        useradd ${root:+--prefix "$root"} -u 1000 -g vercel-sandbox -d /home/vercel-sandbox \
            -s "$shell" -c "Vercel Sandbox" -M vercel-sandbox 2>/dev/null ||
            useradd ${root:+--prefix "$root"} -g vercel-sandbox -d /home/vercel-sandbox \
                -s "$shell" -c "Vercel Sandbox" -M vercel-sandbox
    elif command -v adduser >/dev/null 2>&1 && [ -z "$root" ]; then     # busybox (Alpine)
        addgroup -g 1000 vercel-sandbox 2>/dev/null || addgroup vercel-sandbox
        adduser -D -H -u 1000 -G vercel-sandbox -h /home/vercel-sandbox -s /bin/sh \
            -g "Vercel Sandbox" vercel-sandbox 2>/dev/null ||
            adduser -D -H -G vercel-sandbox -h /home/vercel-sandbox -s /bin/sh vercel-sandbox
    else
        echo "sandbox-agent: no systemd-sysusers, useradd or adduser: create the user vercel-sandbox yourself" >&2
    fi
fi

# Its workdir and home, as tmpfiles.d says. systemd-tmpfiles refuses to run
# without /proc unless given --root, so a chroot without /proc (`dpkg --root`,
# debootstrap, most image builders) takes the mkdir path; at boot
# systemd-tmpfiles-setup.service applies the entry anyway.
if command -v systemd-tmpfiles >/dev/null 2>&1 && { [ -n "$root" ] || [ -e /proc/self ]; }; then
    systemd-tmpfiles ${root:+--root="$root"} --create "$root/usr/lib/tmpfiles.d/sandbox-agent.conf"
else
    mkdir -p "$root/vercel/sandbox" "$root/home/vercel-sandbox"
    chmod 0755 "$root/vercel" "$root/vercel/sandbox"
    chmod 0750 "$root/home/vercel-sandbox"
    if [ -z "$root" ]; then
        chown vercel-sandbox:vercel-sandbox /vercel/sandbox /home/vercel-sandbox
    else
        uid=$(awk -F: '$1 == "vercel-sandbox" {print $3 ":" $4}' "$root/etc/passwd")
        [ -z "$uid" ] || chown "$uid" "$root/vercel/sandbox" "$root/home/vercel-sandbox"
    fi
fi

# Start at boot; (re)start now only where systemd runs (not in an image build).
if command -v systemctl >/dev/null 2>&1 && [ -z "$root" ]; then
    systemctl enable sandbox-agent.service >/dev/null 2>&1 || true
    if [ -d /run/systemd/system ]; then
        systemctl daemon-reload || true
        systemctl restart sandbox-agent.service || true
    fi
fi
