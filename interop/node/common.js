// What the grpc-js server and client of the interop suite share: the loaded protos and
// channel options.
'use strict';

const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const health = require('grpc-health-check');
const protobuf = require('protobufjs');

const PROTO_DIR = path.join(__dirname, '..', 'proto');
const REFLECTION_PROTO = path.join(
  path.dirname(require.resolve('@grpc/reflection/package.json')),
  'build', 'proto', 'grpc', 'reflection', 'v1alpha', 'reflection.proto');

const LOADER_OPTIONS = { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true };

// One definition with everything the backend serves, so reflection lists it all.
const definition = protoLoader.loadSync(
  [path.join(PROTO_DIR, 'interop.proto'), health.protoPath],
  { ...LOADER_OPTIONS, includeDirs: [PROTO_DIR] });
const loaded = grpc.loadPackageDefinition(definition);
const statusRoot = protobuf.loadSync(path.join(PROTO_DIR, 'google/rpc/status.proto'));
const reflectionLoaded = grpc.loadPackageDefinition(protoLoader.loadSync(REFLECTION_PROTO, LOADER_OPTIONS));

// 8 MiB messages cross every hop, so every peer accepts up to 16 MiB.
const MAX_MESSAGE = 16 << 20;
const OPTIONS = {
  'grpc.max_receive_message_length': MAX_MESSAGE,
  'grpc.max_send_message_length': MAX_MESSAGE,
};

// The driver holds our stdin; when it goes away (even killed), so do we.
function exitWhenStdinCloses() {
  process.stdin.on('end', () => process.exit(0));
  process.stdin.on('error', () => process.exit(0));
  process.stdin.resume();
}

module.exports = {
  grpc,
  definition,
  Interop: loaded.interop.v1.Interop,
  Status: statusRoot.lookupType('google.rpc.Status'),
  Health: loaded.grpc.health.v1.Health,
  ServerReflection: reflectionLoaded.grpc.reflection.v1alpha.ServerReflection,
  health,
  OPTIONS,
  exitWhenStdinCloses,
};
