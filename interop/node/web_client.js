// The gRPC-Web client of the interop suite: the official `grpc-web` runtime (what browser
// apps ship), on Node through `xhr2` (an XMLHttpRequest over HTTP/1.1), with the
// messages encoded by protobufjs from interop.proto (no generated code).
//
// Usage: node web_client.js --format binary|text LABEL=HOST:PORT ...
// Runs every check a browser can make (unary and server streaming: no request streams,
// no compression) against every target and prints one JSON line per check, like
// client.js: {"target": LABEL, "check": NAME, "ok": bool, "detail": str, "seen": str}.
'use strict';

const crypto = require('crypto');
const path = require('path');
global.XMLHttpRequest = require('xhr2');
const grpcWeb = require('grpc-web');
const protobuf = require('protobufjs');
const { exitWhenStdinCloses } = require('./common');
const {
  CheckFailed, expect, same, pattern, deadlineVerdict, runChecks, STATUS_MESSAGE, statusDetails,
} = require('./checks');

const PROTO_DIR = path.join(__dirname, '..', 'proto');
// Field names as in the .proto (fail_code), as the other clients write them.
const root = new protobuf.Root().loadSync([
  path.join(PROTO_DIR, 'interop.proto'),
  path.join(PROTO_DIR, 'google/rpc/status.proto'),
], { keepCase: true });
const healthRoot = protobuf.Root.fromJSON({
  nested: {
    grpc: { nested: { health: { nested: { v1: { nested: {
      HealthCheckRequest: { fields: { service: { type: 'string', id: 1 } } },
      HealthCheckResponse: {
        fields: { status: { type: 'ServingStatus', id: 1 } },
        nested: { ServingStatus: { values: { UNKNOWN: 0, SERVING: 1, NOT_SERVING: 2, SERVICE_UNKNOWN: 3 } } },
      },
    } } } } } },
  },
});
const Status = root.lookupType('google.rpc.Status');

// A grpc-web method descriptor for `name` (`/pkg.Service/Method`) with protobufjs types.
function method(name, kind, requestType, responseType) {
  return new grpcWeb.MethodDescriptor(
    name, kind, Object, Object,
    (request) => requestType.encode(requestType.fromObject(request)).finish(),
    (bytes) => responseType.toObject(responseType.decode(bytes), { defaults: true, enums: String }),
  );
}

const Req = root.lookupType('interop.v1.Request');
const Resp = root.lookupType('interop.v1.Response');
const METHODS = {
  Unary: method('/interop.v1.Interop/Unary', grpcWeb.MethodType.UNARY, Req, Resp),
  ServerStream: method('/interop.v1.Interop/ServerStream', grpcWeb.MethodType.SERVER_STREAMING, Req, Resp),
  WasCancelled: method('/interop.v1.Interop/WasCancelled', grpcWeb.MethodType.UNARY,
    root.lookupType('interop.v1.CancelQuery'), root.lookupType('interop.v1.CancelReport')),
  Check: method('/grpc.health.v1.Health/Check', grpcWeb.MethodType.UNARY,
    healthRoot.lookupType('grpc.health.v1.HealthCheckRequest'),
    healthRoot.lookupType('grpc.health.v1.HealthCheckResponse')),
};

// A unary call: resolves with { response, headers, trailers }, rejects with the error
// (code, message, metadata) after the status.
function unary(peer, name, request, metadata = {}) {
  return new Promise((resolve, reject) => {
    let headers = {};
    const call = peer.client.rpcCall(`${peer.base}${METHODS[name].getName()}`, request, metadata, METHODS[name],
      (error, response) => {
        if (error) reject(error);
        else resolve({ response, headers, trailers: status.metadata });
      });
    let status = { metadata: {} };
    call.on('metadata', (h) => { headers = h; });
    call.on('status', (s) => { status = s; });
  });
}

function serverStream(peer, request, metadata = {}) {
  return peer.client.serverStreaming(`${peer.base}${METHODS.ServerStream.getName()}`, request, metadata,
    METHODS.ServerStream);
}

const checks = {
  async unary(peer) {
    const payload = Buffer.concat([Buffer.from('unary \x00\xff', 'latin1'), Buffer.from([...Array(256).keys()])]);
    const { response } = await unary(peer, 'Unary', { payload });
    expect(same(response.payload, payload), `payload of ${response.payload.length} bytes differs`);
    return 'echoed 264 bytes';
  },

  async server_stream(peer) {
    // What a browser page does: 100 messages, each checked.
    const stream = serverStream(peer, { payload: Buffer.from('stream'), response_count: 100 });
    const responses = [];
    const status = await new Promise((resolve, reject) => {
      stream.on('data', (r) => responses.push(r));
      stream.on('error', reject);
      stream.on('status', resolve);
    });
    expect(status.code === grpcWeb.StatusCode.OK, `status ${status.code}`);
    expect(responses.length === 100, `${responses.length} responses`);
    responses.forEach((r, i) => {
      expect(same(r.payload, Buffer.concat([Buffer.from('stream'), Buffer.from([i % 256])])), `response ${i} differs`);
    });
    return '100 responses, OK';
  },

  async metadata(peer) {
    const ascii = 'hello, interop';
    const bin = Buffer.from([0, 1, 2, 0xfe, 0xff]);
    // gRPC-Web carries -bin metadata base64-encoded, as HTTP/2 does.
    const metadata = { 'x-interop-ascii': ascii, 'x-interop-bin': bin.toString('base64') };
    const { headers, trailers } = await unary(peer, 'Unary', { payload: Buffer.from('md') }, metadata);
    const decoded = (value) => (value === undefined ? undefined : Buffer.from(value, 'base64'));
    const expected = [
      ['header x-echo-ascii', headers['x-echo-ascii'], ascii],
      ['header x-echo-bin', decoded(headers['x-echo-bin']), bin],
      ['trailer x-trailer-ascii', trailers['x-trailer-ascii'], `trailer ${ascii}`],
      ['trailer x-trailer-bin', decoded(trailers['x-trailer-bin']), Buffer.from(bin).reverse()],
    ];
    for (const [what, got, value] of expected) {
      const matches = got !== undefined && (Buffer.isBuffer(value) ? same(got, value) : got === value);
      expect(matches, `${what}: ${JSON.stringify(got)}, expected ${JSON.stringify(value)}`);
    }
    return 'ascii and -bin echoed in headers and trailers';
  },

  async status(peer) {
    const message = STATUS_MESSAGE;
    const details = statusDetails(Status, Req.encode(Req.create({ payload: Buffer.from('detail') })).finish());
    try {
      await unary(peer, 'Unary', { fail_code: 9, fail_message: message, fail_details: details });
    } catch (error) {
      if (error instanceof CheckFailed) throw error;
      expect(error.code === grpcWeb.StatusCode.FAILED_PRECONDITION, `code ${error.code}`);
      expect(error.message === message, `message ${JSON.stringify(error.message)}`);
      const got = error.metadata['grpc-status-details-bin'];
      expect(got !== undefined && same(Buffer.from(got, 'base64'), details), 'grpc-status-details-bin differs');
      return 'FAILED_PRECONDITION, message and details exact';
    }
    throw new CheckFailed('the call succeeded');
  },

  async large_8mib(peer) {
    const payload = pattern(8 << 20);
    const { response } = await unary(peer, 'Unary', { payload });
    expect(same(response.payload, payload), `${response.payload.length} bytes back, differing`);
    return '8 MiB both ways';
  },

  async deadline(peer) {
    const callId = crypto.randomUUID();
    const start = Date.now();
    let elapsed;
    let by;
    try {
      // grpc-web turns `deadline` (ms since the epoch) into grpc-timeout.
      await unary(peer, 'Unary', { sleep_ms: 5000, call_id: callId }, { deadline: `${Date.now() + 300}` });
      throw new CheckFailed('the call succeeded');
    } catch (error) {
      if (error instanceof CheckFailed) throw error;
      elapsed = Date.now() - start;
      by = deadlineVerdict(error.code, error.message, grpcWeb.StatusCode);
      expect(elapsed < 2500, `took ${elapsed} ms`);
    }
    const { response } = await unary(peer, 'WasCancelled', { call_id: callId, wait_ms: 5000 });
    expect(response.cancelled, 'the backend did not see the call end');
    return `${by} after ${elapsed} ms; backend saw the call end`;
  },

  async cancel(peer) {
    // xhr2 hands a response over only when it completes, so the stream is cancelled by
    // time, well into its 20 s, rather than after its first messages.
    const callId = crypto.randomUUID();
    const stream = serverStream(peer, { payload: Buffer.from('c'), response_count: 1000, sleep_ms: 20, call_id: callId });
    stream.on('error', () => {});
    let ended = null;
    stream.on('status', (s) => { ended = s; });
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(ended === null, `the stream ended before the cancel: ${ended && ended.code}`);
    // Aborts the request: its HTTP/1.1 connection closes.
    stream.cancel();
    const { response } = await unary(peer, 'WasCancelled', { call_id: callId, wait_ms: 5000 });
    expect(response.cancelled, 'the backend did not see the cancellation');
    return 'backend saw the cancellation (500 ms into a 20 s stream)';
  },

  async health(peer) {
    for (const service of ['', 'interop.v1.Interop']) {
      const { response } = await unary(peer, 'Check', { service });
      expect(response.status === 'SERVING', `'${service}': ${response.status}`);
    }
    return "SERVING for '' and interop.v1.Interop";
  },

  async concurrent_100(peer) {
    const payloads = [...Array(100).keys()].map((i) => Buffer.from(`call-${i}`));
    const results = await Promise.all(payloads.map((payload) => unary(peer, 'Unary', { payload })));
    const wrong = results.filter(({ response }, i) => !same(response.payload, payloads[i])).length;
    expect(wrong === 0, `${wrong} calls answered wrongly`);
    return '100 calls at once, all exact';
  },
};

async function runTarget(format, label, address) {
  // 8 MiB messages cross every hop: every peer accepts up to 16 MiB.
  const client = new grpcWeb.GrpcWebClientBase({ format, maxReceiveMessageSize: 16 << 20 });
  const peer = { client, base: `http://${address}` };
  await runChecks(label, checks, peer);
}

async function main() {
  exitWhenStdinCloses();
  const args = process.argv.slice(2);
  const at = args.indexOf('--format');
  const format = at >= 0 ? args.splice(at, 2)[1] : 'binary';
  if (format !== 'binary' && format !== 'text') throw new Error(`--format binary|text, not ${format}`);
  for (const target of args) {
    const eq = target.indexOf('=');
    await runTarget(format, target.slice(0, eq), target.slice(eq + 1));
  }
  process.exit(0);
}

main();
