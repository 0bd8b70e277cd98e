// The grpc-js client of the interop suite.
//
// Usage: node client.js LABEL=HOST:PORT ...
// Runs every check against every target and prints one JSON line per check:
// {"target": LABEL, "check": NAME, "ok": bool, "detail": str, "seen": str}
// ("seen": whether the peer saw compressed frames: "yes", "no" or "unknown").
'use strict';

const crypto = require('crypto');
const { grpc, Interop, Status, Health, ServerReflection, OPTIONS, exitWhenStdinCloses } = require('./common');
const {
  CheckFailed, expect, same, pattern, deadlineVerdict, runChecks, STATUS_MESSAGE, statusDetails,
} = require('./checks');

const GZIP = 2; // grpc-js's code for gzip in grpc.default_compression_algorithm

function promise(client, method, request, options = {}) {
  const { metadata = new grpc.Metadata(), callOptions = {} } = options;
  // grpc-js calls back before it emits the status with the trailers: settle after both.
  return new Promise((resolve, reject) => {
    const events = {};
    let outcome = null;
    let status = null;
    const settle = () => {
      if (!outcome || !status) return;
      const [error, response] = outcome;
      if (error) reject(Object.assign(error, events));
      else resolve({ response, ...events });
    };
    const call = client[method](request, metadata, callOptions, (error, response) => {
      outcome = [error, response];
      settle();
    });
    call.on('metadata', (headers) => { events.headers = headers; });
    call.on('status', (s) => { status = s; events.trailers = s.metadata; settle(); });
  });
}

// Resolves once the call has ended with its status (after all messages).
function ended(call) {
  return new Promise((resolve) => call.on('status', resolve));
}

function collect(call) {
  return new Promise((resolve, reject) => {
    const responses = [];
    call.on('data', (response) => responses.push(response));
    call.on('error', reject);
    call.on('end', () => resolve(responses));
  });
}

const checks = {
  async unary({ stub }) {
    const payload = Buffer.concat([Buffer.from('unary \x00\xff', 'latin1'), Buffer.from([...Array(256).keys()])]);
    const { response } = await promise(stub, 'Unary', { payload });
    expect(same(response.payload, payload), `payload of ${response.payload.length} bytes differs`);
    return 'echoed 264 bytes';
  },

  async client_stream({ stub }) {
    const parts = [0, 1, 2, 3, 4].map((i) => Buffer.concat([Buffer.from(`part-${i}:`), Buffer.alloc(i, i)]));
    const response = await new Promise((resolve, reject) => {
      const call = stub.ClientStream((error, r) => (error ? reject(error) : resolve(r)));
      for (const payload of parts) call.write({ payload });
      call.end();
    });
    expect(response.request_count === 5, `request_count ${response.request_count}`);
    expect(same(response.payload, Buffer.concat(parts)), 'concatenated payload differs');
    return '5 requests concatenated';
  },

  async server_stream({ stub }) {
    const call = stub.ServerStream({ payload: Buffer.from('stream'), response_count: 5 });
    const status = ended(call);
    const responses = await collect(call);
    expect(responses.length === 5, `${responses.length} responses`);
    responses.forEach((r, i) => {
      expect(same(r.payload, Buffer.concat([Buffer.from('stream'), Buffer.from([i])])), `response ${i} differs`);
    });
    expect((await status).code === grpc.status.OK, 'status not OK');
    return '5 responses, OK';
  },

  async bidi({ stub }) {
    const call = stub.Bidi();
    const queue = [];
    let wake = null;
    call.on('data', (r) => { queue.push(r); if (wake) wake(); });
    const status = ended(call);
    const next = () => new Promise((resolve) => {
      if (queue.length) return resolve(queue.shift());
      wake = () => { wake = null; resolve(queue.shift()); };
    });
    for (let i = 0; i < 5; i += 1) {
      const payload = Buffer.from(`ping-${i}`);
      call.write({ payload });
      const response = await next();
      expect(same(response.payload, payload), `response ${i} differs`);
      expect(response.request_count === i + 1, `response ${i}: count ${response.request_count}`);
    }
    call.end();
    const { code } = await status;
    expect(queue.length === 0, 'a response after half-close');
    expect(code === grpc.status.OK, `status ${code}`);
    return '5 ping-pongs, half-close, OK';
  },

  async empty_client_stream({ stub }) {
    const response = await new Promise((resolve, reject) => {
      const call = stub.ClientStream((error, r) => (error ? reject(error) : resolve(r)));
      call.end();
    });
    expect(response.request_count === 0, `request_count ${response.request_count}`);
    expect(response.payload.length === 0, `payload of ${response.payload.length} bytes`);
    return 'no requests, count 0';
  },

  async empty_bidi({ stub }) {
    const call = stub.Bidi();
    const status = ended(call);
    const responses = collect(call);
    call.end();
    const { code } = await status;
    const got = await responses;
    expect(got.length === 0, `${got.length} responses`);
    expect(code === grpc.status.OK, `status ${code}`);
    return 'half-closed at once, no response, OK';
  },

  async metadata({ stub }) {
    const ascii = 'hello, interop';
    const bin = Buffer.from([0, 1, 2, 0xfe, 0xff]);
    const metadata = new grpc.Metadata();
    metadata.set('x-interop-ascii', ascii);
    metadata.set('x-interop-bin', bin);
    const { headers, trailers } = await promise(stub, 'Unary', { payload: Buffer.from('md') }, { metadata });
    const expected = [
      [headers, 'x-echo-ascii', ascii],
      [headers, 'x-echo-bin', bin],
      [trailers, 'x-trailer-ascii', `trailer ${ascii}`],
      [trailers, 'x-trailer-bin', Buffer.from(bin).reverse()],
    ];
    for (const [where, key, value] of expected) {
      const got = where ? where.get(key) : [];
      const matches = got.length === 1 && (Buffer.isBuffer(value) ? same(got[0], value) : got[0] === value);
      expect(matches, `${key}: ${JSON.stringify(got)}, expected ${JSON.stringify(value)}`);
    }
    return 'ascii and -bin echoed in headers and trailers';
  },

  async status({ stub }) {
    const message = STATUS_MESSAGE;
    const details = statusDetails(Status, Interop.service.Unary.requestSerialize({ payload: Buffer.from('detail') }));
    try {
      await promise(stub, 'Unary', { fail_code: 9, fail_message: message, fail_details: details });
    } catch (error) {
      if (error instanceof CheckFailed) throw error;
      expect(error.code === grpc.status.FAILED_PRECONDITION, `code ${error.code}`);
      expect(error.details === message, `message ${JSON.stringify(error.details)}`);
      const got = error.metadata.get('grpc-status-details-bin');
      expect(got.length === 1 && same(got[0], details), 'grpc-status-details-bin differs');
      return 'FAILED_PRECONDITION, message and details exact';
    }
    throw new CheckFailed('the call succeeded');
  },

  async large_8mib({ stub }) {
    const payload = pattern(8 << 20);
    const { response } = await promise(stub, 'Unary', { payload });
    expect(same(response.payload, payload), `${response.payload.length} bytes back, differing`);
    return '8 MiB both ways';
  },

  async gzip_client({ gzipStub }) {
    const payload = Buffer.from('compress me '.repeat(20000));
    const { response } = await promise(gzipStub, 'Unary', { payload });
    expect(same(response.payload, payload), 'payload differs');
    expect(response.request_compressed !== 'no', 'the backend saw an uncompressed request');
    return [`backend saw compressed: ${response.request_compressed}`, response.request_compressed];
  },

  async gzip_server({ stub }) {
    // grpc-js clients accept gzip; grpc-js does not tell whether a response was compressed.
    const payload = Buffer.from('compressed answer '.repeat(20000));
    const { response } = await promise(stub, 'Unary', { payload });
    expect(same(response.payload, payload), 'payload differs');
    return ['response intact (compression not visible in grpc-js)', 'unknown'];
  },

  async deadline({ stub }) {
    const callId = crypto.randomUUID();
    const start = Date.now();
    let elapsed;
    let by;
    try {
      await promise(stub, 'Unary', { sleep_ms: 5000, call_id: callId }, { callOptions: { deadline: Date.now() + 300 } });
      throw new CheckFailed('the call succeeded');
    } catch (error) {
      if (error instanceof CheckFailed) throw error;
      elapsed = Date.now() - start;
      by = deadlineVerdict(error.code, error.details, grpc.status);
      expect(elapsed < 2500, `took ${elapsed} ms`);
    }
    const { response } = await promise(stub, 'WasCancelled', { call_id: callId, wait_ms: 5000 });
    expect(response.cancelled, 'the backend did not see the call end');
    return `${by} after ${elapsed} ms; backend saw the call end`;
  },

  async cancel({ stub }) {
    const callId = crypto.randomUUID();
    const call = stub.ServerStream({ payload: Buffer.from('c'), response_count: 1000, sleep_ms: 20, call_id: callId });
    call.on('error', () => {}); // the CANCELLED status this causes is expected
    await new Promise((resolve) => {
      let seen = 0;
      call.on('data', () => { seen += 1; if (seen === 2) resolve(); });
    });
    call.cancel();
    const { response } = await promise(stub, 'WasCancelled', { call_id: callId, wait_ms: 5000 });
    expect(response.cancelled, 'the backend did not see the cancellation');
    return 'backend saw the cancellation';
  },

  async health({ health }) {
    for (const service of ['', 'interop.v1.Interop']) {
      const { response } = await promise(health, 'Check', { service });
      expect(response.status === 'SERVING', `'${service}': ${response.status}`);
    }
    return "SERVING for '' and interop.v1.Interop";
  },

  async reflection({ reflection }) {
    const call = reflection.ServerReflectionInfo();
    const responses = collect(call);
    call.write({ list_services: '' });
    call.end();
    const names = new Set();
    for (const r of await responses) {
      for (const s of r.list_services_response.service) names.add(s.name);
    }
    for (const wanted of ['interop.v1.Interop', 'grpc.health.v1.Health']) {
      expect(names.has(wanted), `${wanted} not in ${[...names].sort().join(', ')}`);
    }
    return `${names.size} services listed`;
  },

  async concurrent_100({ stub }) {
    const payloads = [...Array(100).keys()].map((i) => Buffer.from(`call-${i}`));
    const results = await Promise.all(payloads.map((payload) => promise(stub, 'Unary', { payload })));
    const wrong = results.filter(({ response }, i) => !same(response.payload, payloads[i])).length;
    expect(wrong === 0, `${wrong} calls answered wrongly`);
    return '100 calls at once, all exact';
  },
};

async function runTarget(label, address) {
  const insecure = grpc.credentials.createInsecure();
  const peers = {
    stub: new Interop(address, insecure, OPTIONS),
    gzipStub: new Interop(address, insecure, { ...OPTIONS, 'grpc.default_compression_algorithm': GZIP }),
    health: new Health(address, insecure),
    reflection: new ServerReflection(address, insecure),
  };
  await runChecks(label, checks, peers);
  for (const client of Object.values(peers)) client.close();
}

async function main() {
  exitWhenStdinCloses();
  // One target after another: the deadline and cancellation checks time things, so they
  // do not share the peers' CPU with 8 MiB messages.
  for (const target of process.argv.slice(2)) {
    const at = target.indexOf('=');
    await runTarget(target.slice(0, at), target.slice(at + 1));
  }
  process.exit(0);
}

main();
