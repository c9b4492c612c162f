# sandbox-gateway pre-removal: stop and disable the unit where systemd runs.
# The token, the state directory and running sessions' agents stay.
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    systemctl stop sandbox-gateway.service || true
fi
if command -v systemctl >/dev/null 2>&1; then
    systemctl disable sandbox-gateway.service >/dev/null 2>&1 || true
fi
