"""A small OTLP/gRPC trace receiver for the tests: it serves
opentelemetry.proto.collector.trace.v1.TraceService/Export (from the official
opentelemetry-proto package) and prints every span it receives as one JSON line.

Usage: otlp_receiver.py [--http] [--delay-ms N]
With --http it takes OTLP/HTTP instead (POST /v1/traces, application/x-protobuf).
Prints `LISTENING <port>`, then per span: {"trace_id", "span_id", "parent_span_id" (hex),
"name", "kind", "attributes" {key: value}, "status_code", "status_message",
"service_name", "start_time_unix_nano", "end_time_unix_nano", "events" [{"name",
"time_unix_nano", "attributes"}]}. With --delay-ms it waits that long before answering
each export (a slow collector). Exits when its standard input closes.
"""

import json
import sys
import threading
import time
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
from opentelemetry.proto.collector.trace.v1 import (
    trace_service_pb2,
    trace_service_pb2_grpc,
)


def value_of(any_value):
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, delay):
        self.delay = delay
        self.lock = threading.Lock()

    def Export(self, request, context):
        self.record(request)
        return trace_service_pb2.ExportTraceServiceResponse()

    def record(self, request):
        if self.delay:
            time.sleep(self.delay)
        lines = []
        for resource_spans in request.resource_spans:
            resource = {a.key: value_of(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    lines.append(json.dumps({
                        "trace_id": span.trace_id.hex(),
                        "span_id": span.span_id.hex(),
                        "parent_span_id": span.parent_span_id.hex(),
                        "name": span.name,
                        "kind": span.kind,
                        "attributes": {a.key: value_of(a.value) for a in span.attributes},
                        "status_code": span.status.code,
                        "status_message": span.status.message,
                        "service_name": resource.get("service.name"),
                        "start_time_unix_nano": span.start_time_unix_nano,
                        "end_time_unix_nano": span.end_time_unix_nano,
                        "events": [
                            {
                                "name": event.name,
                                "time_unix_nano": event.time_unix_nano,
                                "attributes": {a.key: value_of(a.value) for a in event.attributes},
                            }
                            for event in span.events
                        ],
                    }))
        with self.lock:
            for line in lines:
                print(line, flush=True)


def http_handler(receiver):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            if self.path != "/v1/traces":
                self.send_response(404)
                self.send_header("content-length", "0")
                self.end_headers()
                return
            request = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
            receiver.record(request)
            answer = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args):
            pass

    return Handler


def main():
    delay = 0.0
    if "--delay-ms" in sys.argv:
        delay = int(sys.argv[sys.argv.index("--delay-ms") + 1]) / 1000
    receiver = Receiver(delay)
    if "--http" in sys.argv:
        server = ThreadingHTTPServer(("127.0.0.1", 0), http_handler(receiver))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        print(f"LISTENING {server.server_address[1]}", flush=True)
        sys.stdin.read()
        server.shutdown()
        return
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"LISTENING {port}", flush=True)
    sys.stdin.read()
    server.stop(0)


if __name__ == "__main__":
    main()
