#!/bin/bash
# scalelab instance bootstrap: EC2 runs this once, as root, at first boot.
# It installs Node.js (NODE_MAJOR) and pm2, writes the built-in app and starts it under pm2
# as an unprivileged user, with a systemd unit so it comes back after a reboot.
# The placeholder values below are filled in by scalelab.userdata before launch.
set -euo pipefail
exec > >(tee -a /var/log/scalelab-user-data.log) 2>&1

readonly APP_DIR=/opt/scalelab
readonly APP_USER=scalelab
readonly APP_PORT="__SCALELAB_APP_PORT__"
readonly HEALTH_PATH="__SCALELAB_HEALTH_PATH__"
readonly APP_JS_B64="__SCALELAB_APP_JS_B64__"
readonly PM2_VERSION=5.4.3
# A Node.js major AL2023 supports (its "nodejs" package is Node.js 18, past its end of life);
# tests/node pins the same major to run the app's tests on.
readonly NODE_MAJOR=22

echo "scalelab: bootstrap started at $(date --iso-8601=seconds)"

dnf install -y "nodejs${NODE_MAJOR}" "nodejs${NODE_MAJOR}-npm"
# AL2023 installs each major under its own names (node-22, npm-22) and points node and npm at one
# of them through alternatives, the first major installed: select this one, whichever the AMI had.
alternatives --set node "/usr/bin/node-${NODE_MAJOR}" ||
  echo "scalelab: alternatives could not select node-${NODE_MAJOR}"
node_version=$(node --version)
if [[ $node_version != "v${NODE_MAJOR}."* ]]; then
  echo "scalelab: node is ${node_version}, not Node.js ${NODE_MAJOR}; the app is not started" >&2
  exit 1
fi
# The CPU stress test prefers stress-ng and falls back to a shell loop, so a
# missing package is logged, not fatal.
# Only the stress needs it, minutes from now: it installs in the background while npm
# installs pm2, off the path to the app answering (dnf runs once at a time either way).
(dnf install -y stress-ng || echo "scalelab: stress-ng not installed; stress uses the shell fallback") &
readonly STRESS_NG_INSTALL=$!
"npm-${NODE_MAJOR}" install --global "pm2@${PM2_VERSION}"

id -u "$APP_USER" >/dev/null 2>&1 ||
  useradd --system --home-dir "$APP_DIR" --create-home --shell /sbin/nologin "$APP_USER"
mkdir -p "$APP_DIR"
printf '%s' "$APP_JS_B64" | base64 --decode >"$APP_DIR/app.js"
cat >"$APP_DIR/ecosystem.config.js" <<ECOSYSTEM
module.exports = {
  apps: [{
    name: 'scalelab-app',
    script: '${APP_DIR}/app.js',
    env: { PORT: '${APP_PORT}', HEALTH_PATH: '${HEALTH_PATH}' },
    max_restarts: 50,
    restart_delay: 1000,
  }],
};
ECOSYSTEM
chown -R "$APP_USER:$APP_USER" "$APP_DIR"

run_as_app() {
  runuser -u "$APP_USER" -- env HOME="$APP_DIR" PM2_HOME="$APP_DIR/.pm2" "$@"
}

run_as_app pm2 start "$APP_DIR/ecosystem.config.js"
run_as_app pm2 save
# Registers pm2-scalelab.service so the saved process list is resurrected at boot.
env PATH="$PATH:/usr/bin:/usr/local/bin" pm2 startup systemd -u "$APP_USER" --hp "$APP_DIR"
systemctl enable "pm2-${APP_USER}"

echo "scalelab: app started on port ${APP_PORT}, GET ${HEALTH_PATH}"
wait "$STRESS_NG_INSTALL"
echo "scalelab: bootstrap done at $(date --iso-8601=seconds)"
