// The example page's code: calls interop.v1.Interop through grpcproxy's gRPC-Web listener
// with the official grpc-web client, and shows what came back. Bundled into dist/app.js
// (`npm run build`); the messages are described inline for protobufjs (no generated code).
//
// The page takes ?proxy=http://HOST:PORT (default http://127.0.0.1:8080) and
// ?format=text|binary (default text: what lets a browser read a stream as it comes).
import { GrpcWebClientBase, MethodDescriptor, MethodType, StatusCode } from 'grpc-web';
import protobuf from 'protobufjs/light.js';

const root = protobuf.Root.fromJSON({
  nested: {
    interop: { nested: { v1: { nested: {
      Request: { fields: {
        payload: { type: 'bytes', id: 1 },
        response_count: { type: 'uint32', id: 2 },
        sleep_ms: { type: 'uint32', id: 3 },
        fail_code: { type: 'int32', id: 4 },
        fail_message: { type: 'string', id: 5 },
        fail_details: { type: 'bytes', id: 6 },
        call_id: { type: 'string', id: 7 },
      } },
      Response: { fields: {
        payload: { type: 'bytes', id: 1 },
        request_count: { type: 'uint32', id: 2 },
        request_compressed: { type: 'string', id: 3 },
      } },
      CancelQuery: { fields: { call_id: { type: 'string', id: 1 }, wait_ms: { type: 'uint32', id: 2 } } },
      CancelReport: { fields: { cancelled: { type: 'bool', id: 1 } } },
    } } } },
    google: { nested: {
      rpc: { nested: { Status: { fields: {
        code: { type: 'int32', id: 1 },
        message: { type: 'string', id: 2 },
        details: { rule: 'repeated', type: 'google.protobuf.Any', id: 3 },
      } } } },
      protobuf: { nested: { Any: { fields: {
        type_url: { type: 'string', id: 1 },
        value: { type: 'bytes', id: 2 },
      } } } },
    } },
  },
});
const Request = root.lookupType('interop.v1.Request');
const Response = root.lookupType('interop.v1.Response');
const Status = root.lookupType('google.rpc.Status');

function method(name, kind, requestType, responseType) {
  return new MethodDescriptor(`/interop.v1.Interop/${name}`, kind, Object, Object,
    (request) => requestType.encode(requestType.fromObject(request)).finish(),
    (bytes) => responseType.toObject(responseType.decode(bytes), { defaults: true }));
}
const UNARY = method('Unary', MethodType.UNARY, Request, Response);
const SERVER_STREAM = method('ServerStream', MethodType.SERVER_STREAMING, Request, Response);
const WAS_CANCELLED = method('WasCancelled', MethodType.UNARY,
  root.lookupType('interop.v1.CancelQuery'), root.lookupType('interop.v1.CancelReport'));

const params = new URLSearchParams(window.location.search);
const proxy = params.get('proxy') || 'http://127.0.0.1:8080';
const format = params.get('format') || 'text';
const client = new GrpcWebClientBase({ format });
const text = new TextEncoder();
const utf8 = new TextDecoder();

function unary(descriptor, request, metadata = {}) {
  return new Promise((resolve, reject) => {
    client.rpcCall(`${proxy}${descriptor.getName()}`, request, metadata, descriptor,
      (error, response) => (error ? reject(error) : resolve(response)));
  });
}

function fromBase64(value) {
  return Uint8Array.from(atob(value), (c) => c.charCodeAt(0));
}

class Mismatch extends Error {}
function expect(condition, detail) {
  if (!condition) throw new Mismatch(detail);
}

const calls = {
  // A greeting echoed back.
  async unary() {
    const greeting = 'Hello from the browser ✓';
    const response = await unary(UNARY, { payload: text.encode(greeting) });
    const back = utf8.decode(response.payload);
    expect(back === greeting, `echoed ${JSON.stringify(back)}`);
    return `echoed "${back}"`;
  },

  // 100 messages, each checked, read as they come.
  async server_stream() {
    const stream = client.serverStreaming(`${proxy}${SERVER_STREAM.getName()}`,
      { payload: text.encode('item'), response_count: 100 }, {}, SERVER_STREAM);
    const got = [];
    const status = await new Promise((resolve, reject) => {
      stream.on('data', (r) => got.push(r.payload));
      stream.on('error', reject);
      stream.on('status', resolve);
    });
    expect(status.code === StatusCode.OK, `status ${status.code}`);
    got.forEach((payload, i) => {
      expect(payload.length === 5 && utf8.decode(payload.subarray(0, 4)) === 'item' && payload[4] === i,
        `message ${i} differs`);
    });
    return `${got.length} messages in order, status OK`;
  },

  // An error with rich details (google.rpc.Status in grpc-status-details-bin).
  async error_details() {
    const message = 'no greeting today ✓';
    const detail = { type_url: 'type.googleapis.com/interop.v1.Request', value: Request.encode({ payload: text.encode('why') }).finish() };
    const details = Status.encode({ code: StatusCode.FAILED_PRECONDITION, message, details: [detail] }).finish();
    try {
      await unary(UNARY, { fail_code: StatusCode.FAILED_PRECONDITION, fail_message: message, fail_details: details });
    } catch (error) {
      if (error instanceof Mismatch) throw error;
      expect(error.code === StatusCode.FAILED_PRECONDITION, `code ${error.code}`);
      expect(error.message === message, `message ${JSON.stringify(error.message)}`);
      const rich = Status.decode(fromBase64(error.metadata['grpc-status-details-bin']));
      const inner = Request.decode(rich.details[0].value);
      expect(rich.details[0].type_url === detail.type_url, `detail type ${rich.details[0].type_url}`);
      return `code ${error.code}, "${error.message}", detail ${rich.details[0].type_url.split('/')[1]} "${utf8.decode(inner.payload)}"`;
    }
    throw new Mismatch('the call succeeded');
  },

  // A 300 ms deadline on a call the backend answers after 5 s.
  async deadline() {
    const started = performance.now();
    try {
      await unary(UNARY, { sleep_ms: 5000 }, { deadline: `${Date.now() + 300}` });
    } catch (error) {
      if (error instanceof Mismatch) throw error;
      const elapsed = performance.now() - started;
      expect(error.code === StatusCode.DEADLINE_EXCEEDED, `code ${error.code}: ${error.message}`);
      expect(elapsed < 2500, `after ${Math.round(elapsed)} ms`);
      return 'DEADLINE_EXCEEDED within 2.5 s';
    }
    throw new Mismatch('the call succeeded');
  },

  // A stream cancelled after its second message; the backend says whether it saw that
  // (over HTTP/1.1 the browser cancels by closing the connection).
  async cancel() {
    const callId = `page-${Math.random().toString(36).slice(2)}`;
    const stream = client.serverStreaming(`${proxy}${SERVER_STREAM.getName()}`,
      { payload: text.encode('c'), response_count: 1000, sleep_ms: 20, call_id: callId }, {}, SERVER_STREAM);
    stream.on('error', () => {});
    await new Promise((resolve, reject) => {
      let seen = 0;
      stream.on('data', () => { seen += 1; if (seen === 2) resolve(); });
      stream.on('status', (s) => reject(new Mismatch(`ended with ${s.code} first`)));
    });
    stream.cancel();
    const report = await unary(WAS_CANCELLED, { call_id: callId, wait_ms: 5000 });
    expect(report.cancelled, 'the backend did not see the cancel');
    return 'cancelled after 2 messages; the backend saw it';
  },
};

async function main() {
  document.getElementById('proxy').textContent = `${proxy} (${format})`;
  const body = document.querySelector('#results tbody');
  const results = [];
  for (const [name, call] of Object.entries(calls)) {
    let result;
    try {
      result = { call: name, ok: true, detail: await call() };
    } catch (error) {
      result = { call: name, ok: false, detail: error instanceof Mismatch ? error.message : `${error.code ?? ''} ${error.message}`.trim() };
    }
    results.push(result);
    const row = body.insertRow();
    row.className = result.ok ? 'ok' : 'failed';
    for (const cell of [result.call, result.ok ? 'ok' : 'FAILED', result.detail]) {
      row.insertCell().textContent = cell;
    }
  }
  document.getElementById('json').textContent = JSON.stringify(results);
  document.body.dataset.done = 'true';
  console.log(`RESULTS ${JSON.stringify(results)}`);
}

main();
