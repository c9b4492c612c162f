# sandbox-agent: before removal (not on upgrade): stop and disable the unit.
# The user and /vercel/sandbox stay (they hold the user's files). Nothing to
# do for a package removed from another root ($DPKG_ROOT, dpkg --root).
if [ -z "${DPKG_ROOT:-}" ] && command -v systemctl >/dev/null 2>&1; then
    if [ -d /run/systemd/system ]; then
        systemctl stop sandbox-agent.service || true
    fi
    systemctl disable sandbox-agent.service >/dev/null 2>&1 || true
fi
