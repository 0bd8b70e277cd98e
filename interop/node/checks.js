// What the interop clients (client.js for grpc-js, web_client.js for grpc-web) share:
// how a check fails, byte comparisons, the large payload, the deadline check's verdict, and
// the loop that runs every check against a target and prints one JSON line each.
'use strict';

const CHECK_TIMEOUT_MS = 30000;

class CheckFailed extends Error {}

function expect(condition, detail) {
  if (!condition) throw new CheckFailed(detail);
}

function same(a, b) {
  return Buffer.compare(Buffer.from(a), Buffer.from(b)) === 0;
}

function pattern(size) {
  const buffer = Buffer.alloc(size);
  for (let i = 0; i < size; i += 1) buffer[i] = i % 251;
  return buffer;
}

// How a call with a 300 ms deadline on a 5 s answer ended (`code`, `message`, with the
// library's status codes): DEADLINE_EXCEEDED, or a tonic server's own answer to its
// expired deadline, CANCELLED "Timeout expired" (tonic 0.14), which wins the race with
// the client's timer now and then. Anything else fails the check.
function deadlineVerdict(code, message, codes) {
  if (code === codes.DEADLINE_EXCEEDED) return 'DEADLINE_EXCEEDED';
  if (code === codes.CANCELLED && message === 'Timeout expired') return "tonic's deadline answer (CANCELLED)";
  throw new CheckFailed(`code ${code}: ${message}`);
}

// The status the `status` check asks for: FAILED_PRECONDITION, a message that needs
// percent-encoding, and a google.rpc.Status (`Status`, a protobufjs type) in the details
// carrying one Any whose value is `detail` (an encoded interop.v1.Request).
const STATUS_MESSAGE = 'interop: précondition ✓ 100%';
function statusDetails(Status, detail) {
  return Buffer.from(Status.encode(Status.create({
    code: 9,
    message: STATUS_MESSAGE,
    details: [{ type_url: 'type.googleapis.com/interop.v1.Request', value: detail }],
  })).finish());
}

function withTimeout(work) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new CheckFailed(`no outcome within ${CHECK_TIMEOUT_MS} ms`)), CHECK_TIMEOUT_MS);
  });
  return Promise.race([work, timeout]).finally(() => clearTimeout(timer));
}

// Runs every check of `checks` (name → async (peer) → detail or [detail, seen]) against
// `peer`, printing {"target", "check", "ok", "detail", "seen"} per check.
async function runChecks(label, checks, peer) {
  for (const [name, check] of Object.entries(checks)) {
    let line;
    try {
      const result = await withTimeout(check(peer));
      const [detail, seen] = Array.isArray(result) ? result : [result, ''];
      line = { target: label, check: name, ok: true, detail, seen };
    } catch (error) {
      const detail = error instanceof CheckFailed ? error.message : `${error.code ?? ''} ${error.message}`.trim();
      line = { target: label, check: name, ok: false, detail, seen: '' };
    }
    process.stdout.write(`${JSON.stringify(line)}\n`);
  }
}

module.exports = {
  CheckFailed, expect, same, pattern, deadlineVerdict, runChecks, STATUS_MESSAGE, statusDetails,
};
