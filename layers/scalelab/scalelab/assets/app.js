'use strict';
// scalelab's built-in app: answers GET <health path> with the identity of the
// instance that served the request, so a probe through the load balancer can
// count distinct instances. No dependencies beyond Node.js itself (>= 18).
const http = require('node:http');

const PORT = Number(process.env.PORT || 3005);
const HEALTH_PATH = process.env.HEALTH_PATH || '/home';
// Overridable so tests can stand in for the instance metadata service.
const IMDS = process.env.IMDS_ENDPOINT || 'http://169.254.169.254';
const IMDS_TIMEOUT_MS = 2000;
const IMDS_RETRY_MS = 2000;

let identity = null;

async function imdsGet(token, path) {
  const response = await fetch(`${IMDS}${path}`, {
    headers: { 'X-aws-ec2-metadata-token': token },
    signal: AbortSignal.timeout(IMDS_TIMEOUT_MS),
  });
  if (!response.ok) throw new Error(`IMDS ${path} answered ${response.status}`);
  return (await response.text()).trim();
}

// IMDSv2 only: the launch template requires session tokens.
async function loadIdentity() {
  const tokenResponse = await fetch(`${IMDS}/latest/api/token`, {
    method: 'PUT',
    headers: { 'X-aws-ec2-metadata-token-ttl-seconds': '300' },
    signal: AbortSignal.timeout(IMDS_TIMEOUT_MS),
  });
  if (!tokenResponse.ok) throw new Error(`IMDS token answered ${tokenResponse.status}`);
  const token = await tokenResponse.text();
  return {
    instance_id: await imdsGet(token, '/latest/meta-data/instance-id'),
    availability_zone: await imdsGet(token, '/latest/meta-data/placement/availability-zone'),
  };
}

async function resolveIdentity() {
  while (identity === null) {
    try {
      identity = await loadIdentity();
      console.log(`scalelab app: serving as ${identity.instance_id} in ${identity.availability_zone}`);
    } catch (error) {
      console.error(`scalelab app: instance metadata not available yet (${error.message})`);
      await new Promise((resolve) => setTimeout(resolve, IMDS_RETRY_MS));
    }
  }
}

function send(response, status, body) {
  response.writeHead(status, { 'Content-Type': 'application/json', 'Cache-Control': 'no-store' });
  response.end(JSON.stringify(body));
}

const server = http.createServer((request, response) => {
  const path = new URL(request.url, 'http://localhost').pathname;
  if (request.method !== 'GET' || path !== HEALTH_PATH) {
    send(response, 404, { error: `only GET ${HEALTH_PATH} is served` });
  } else if (identity === null) {
    // Unhealthy until the instance knows who it is: a probe must be able to
    // tell instances apart.
    send(response, 503, { error: 'instance identity not known yet' });
  } else {
    send(response, 200, {
      ...identity,
      served_at: new Date().toISOString(),
      uptime_seconds: Math.round(process.uptime()),
    });
  }
});

server.listen(PORT, () => console.log(`scalelab app: listening on ${PORT}, GET ${HEALTH_PATH}`));
resolveIdentity();

process.on('SIGTERM', () => server.close(() => process.exit(0)));
