'use strict';
// scalelab's built-in app: answers GET <health path> with the identity of the
// instance that served the request, so a probe through the load balancer can
// count distinct instances, and serves bounded loads for the network signals:
// POST /load/upload (bytes in) and GET /load/download?bytes=N (bytes out).
// No dependencies beyond Node.js itself (>= 18).
const http = require('node:http');

const PORT = Number(process.env.PORT || 3005);
const HEALTH_PATH = process.env.HEALTH_PATH || '/home';
// Overridable so tests can stand in for the instance metadata service.
const IMDS = process.env.IMDS_ENDPOINT || 'http://169.254.169.254';
const IMDS_TIMEOUT_MS = 2000;
const IMDS_RETRY_MS = 2000;

const UPLOAD_PATH = '/load/upload';
const DOWNLOAD_PATH = '/load/download';
// One cap for both directions: a load request moves at most 1 MiB, so the load
// generator's byte count is its request count times a known size.
const LOAD_MAX_BYTES = 1048576;
// Digits only: Number() would also take "1e6", "0x10", " 1" or "".
const BYTES_PATTERN = /^[0-9]{1,7}$/;
// Every download is sliced from this one buffer, so serving many at once costs
// no memory per byte asked for.
const DOWNLOAD_CHUNK = Buffer.alloc(64 * 1024, 'scalelab ');
const SERVED = `GET ${HEALTH_PATH}, POST ${UPLOAD_PATH} and GET ${DOWNLOAD_PATH}?bytes=N`;

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

function carriesBody(request) {
  return request.headers['transfer-encoding'] !== undefined || Number(request.headers['content-length'] || 0) > 0;
}

function send(request, response, status, body) {
  const headers = { 'Content-Type': 'application/json', 'Cache-Control': 'no-store' };
  // Node drains an unread body to keep the connection: closing it instead
  // means an answer given before the body is read never costs reading it.
  if (carriesBody(request) && !request.complete) headers.Connection = 'close';
  response.writeHead(status, headers);
  response.end(JSON.stringify(body));
}

function tooLarge(request, response) {
  send(request, response, 413, { error: `the upload is larger than ${LOAD_MAX_BYTES} bytes (1 MiB), the most one request may send` });
}

function upload(request, response) {
  if (Number(request.headers['content-length'] || 0) > LOAD_MAX_BYTES) {
    tooLarge(request, response);
    return;
  }
  if (/100-continue/i.test(request.headers.expect || '')) response.writeContinue();
  // Counted and dropped as it streams: memory stays the same whatever is sent.
  let received = 0;
  const count = (chunk) => {
    received += chunk.length;
    if (received > LOAD_MAX_BYTES) {
      request.off('data', count);
      request.pause();
      tooLarge(request, response);
    }
  };
  request.on('data', count);
  request.on('end', () => {
    if (received <= LOAD_MAX_BYTES) send(request, response, 200, { received_bytes: received, ...identity });
  });
}

function download(request, response, query) {
  const given = query.getAll('bytes');
  const bytes = given.length === 1 && BYTES_PATTERN.test(given[0]) ? Number(given[0]) : 0;
  if (bytes < 1 || bytes > LOAD_MAX_BYTES) {
    send(request, response, 400, {
      error: `bytes must be given once, as a whole number of bytes in digits from 1 to ${LOAD_MAX_BYTES} (1 MiB), as in ${DOWNLOAD_PATH}?bytes=65536`,
    });
    return;
  }
  response.writeHead(200, {
    'Content-Type': 'application/octet-stream',
    'Content-Length': bytes,
    'Cache-Control': 'no-store',
  });
  let left = bytes;
  // Written as the client takes it: at most a chunk waits in the app per download.
  const pump = () => {
    while (left > 0) {
      const size = Math.min(left, DOWNLOAD_CHUNK.length);
      left -= size;
      if (!response.write(DOWNLOAD_CHUNK.subarray(0, size))) {
        response.once('drain', pump);
        return;
      }
    }
    response.end();
  };
  pump();
}

function handle(request, response) {
  let url;
  try {
    url = new URL(request.url, 'http://localhost');
  } catch {
    // Thrown here it would end the process, and every request on the instance.
    send(request, response, 400, { error: 'the request target is not a valid URL' });
    return;
  }
  const route = `${request.method} ${url.pathname}`;
  const served = route === `GET ${HEALTH_PATH}` || route === `POST ${UPLOAD_PATH}` || route === `GET ${DOWNLOAD_PATH}`;
  if (!served) {
    send(request, response, 404, { error: `only ${SERVED} are served` });
  } else if (identity === null) {
    // Unhealthy until the instance knows who it is: a probe must be able to
    // tell instances apart.
    send(request, response, 503, { error: 'instance identity not known yet' });
  } else if (route === `POST ${UPLOAD_PATH}`) {
    upload(request, response);
  } else if (route === `GET ${DOWNLOAD_PATH}`) {
    download(request, response, url.searchParams);
  } else {
    send(request, response, 200, {
      ...identity,
      served_at: new Date().toISOString(),
      uptime_seconds: Math.round(process.uptime()),
    });
  }
}

const server = http.createServer(
  {
    // Slow clients are cut off: headers within 10 s, a whole request (1 MiB at
    // most) within 30 s, checked every second rather than Node's 30 s.
    headersTimeout: 10_000,
    requestTimeout: 30_000,
    connectionsCheckingInterval: 1_000,
    // Longer than the load balancer's 60 s idle timeout, so the load balancer,
    // not the app, closes an idle connection and never sends on one the app
    // has just closed (a 502).
    keepAliveTimeout: 65_000,
  },
  handle,
);
// Answering an oversized upload at once, without inviting its body.
server.on('checkContinue', handle);

server.listen(PORT, () => console.log(`scalelab app: listening on ${PORT}, ${SERVED}`));
resolveIdentity();

process.on('SIGTERM', () => server.close(() => process.exit(0)));
