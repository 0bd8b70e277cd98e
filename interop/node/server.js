// The grpc-js backend of the interop suite: interop.v1.Interop (see interop.proto for what
// each method answers), grpc.health.v1 and server reflection, on 127.0.0.1.
//
// Prints `LISTENING <port>` once serving; exits when its standard input closes.
// grpc-js servers do not compress responses (grpc-js 1.14), so this backend never does.
'use strict';

const { ReflectionService } = require('@grpc/reflection');
const { grpc, definition, Interop, health, OPTIONS, exitWhenStdinCloses } = require('./common');

const SERVICE = 'interop.v1.Interop';

// Which calls (by call_id) ended because their client went away, and who waits to know.
const cancelled = new Set();
const waiters = new Map();

function markCancelled(callId) {
  if (!callId) return;
  cancelled.add(callId);
  for (const wake of waiters.get(callId) || []) wake(true);
  waiters.delete(callId);
}

function waitCancelled(callId, waitMs) {
  if (cancelled.has(callId)) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), waitMs);
    const wake = (value) => { clearTimeout(timer); resolve(value); };
    waiters.set(callId, [...(waiters.get(callId) || []), wake]);
  });
}

function failure(request) {
  if (!request.fail_code) return null;
  const metadata = new grpc.Metadata();
  metadata.set('grpc-status-details-bin', request.fail_details);
  return { code: request.fail_code, details: request.fail_message, metadata };
}

function first(metadata, key) {
  const values = metadata.get(key);
  return values.length ? values[0] : undefined;
}

const handlers = {
  Unary(call, callback) {
    const request = call.request;
    const ascii = first(call.metadata, 'x-interop-ascii');
    const bin = first(call.metadata, 'x-interop-bin');
    const trailers = new grpc.Metadata();
    if (ascii !== undefined || bin !== undefined) {
      const headers = new grpc.Metadata();
      if (ascii !== undefined) {
        headers.set('x-echo-ascii', ascii);
        trailers.set('x-trailer-ascii', `trailer ${ascii}`);
      }
      if (bin !== undefined) {
        headers.set('x-echo-bin', bin);
        trailers.set('x-trailer-bin', Buffer.from(bin).reverse());
      }
      call.sendMetadata(headers);
    }
    let done = false;
    call.on('cancelled', () => { if (!done) markCancelled(request.call_id); });
    // grpc-js ends a call at its deadline without telling the handler: watch it here.
    const deadline = Number(call.getDeadline());
    if (Number.isFinite(deadline)) {
      setTimeout(() => { if (!done) markCancelled(request.call_id); }, Math.max(0, deadline - Date.now()));
    }
    setTimeout(() => {
      done = true;
      const error = failure(request);
      if (error) return callback(error);
      callback(null, { payload: request.payload, request_compressed: 'unknown' }, trailers);
    }, request.sleep_ms);
  },

  ClientStream(call, callback) {
    const parts = [];
    call.on('data', (request) => parts.push(request.payload));
    call.on('end', () => callback(null, { payload: Buffer.concat(parts), request_count: parts.length }));
  },

  ServerStream(call) {
    const request = call.request;
    const error = failure(request);
    if (error) return call.emit('error', error);
    let sent = 0;
    let finished = false;
    call.on('cancelled', () => { finished = true; markCancelled(request.call_id); });
    const next = () => {
      if (finished) return;
      if (sent === request.response_count) {
        finished = true;
        return call.end();
      }
      const payload = Buffer.concat([request.payload, Buffer.from([sent % 256])]);
      sent += 1;
      call.write({ payload });
      setTimeout(next, request.sleep_ms);
    };
    next();
  },

  Bidi(call) {
    let count = 0;
    call.on('data', (request) => {
      count += 1;
      call.write({ payload: request.payload, request_count: count });
    });
    call.on('end', () => call.end());
  },

  WasCancelled(call, callback) {
    waitCancelled(call.request.call_id, call.request.wait_ms)
      .then((value) => callback(null, { cancelled: value }));
  },
};

function main() {
  exitWhenStdinCloses();
  const server = new grpc.Server(OPTIONS);
  server.addService(Interop.service, handlers);
  const healthImpl = new health.HealthImplementation({ '': 'SERVING', [SERVICE]: 'SERVING' });
  healthImpl.addToServer(server);
  new ReflectionService(definition).addToServer(server);
  server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (error, port) => {
    if (error) {
      console.error(`cannot listen: ${error.message}`);
      process.exit(1);
    }
    console.log(`LISTENING ${port}`);
  });
}

main();
