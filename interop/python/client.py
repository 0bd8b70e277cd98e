"""The grpcio client of the interop suite.

Usage: client.py LABEL=HOST:PORT ...
Runs every check against every target and prints one JSON line per check:
{"target": LABEL, "check": NAME, "ok": bool, "detail": str, "seen": str}
("seen": whether the peer saw compressed frames: "yes", "no" or "unknown")."""

import asyncio
import json
import sys
import time
import uuid

import grpc
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status
from google.protobuf import any_pb2
from google.rpc import status_pb2

from interop_common import OPTIONS, exit_when_stdin_closes, pb, services

CHECK_TIMEOUT = 30


class CheckFailed(Exception):
    pass


def expect(condition, detail):
    if not condition:
        raise CheckFailed(detail)


def metadata_value(metadata, key):
    values = [value for (k, value) in metadata or () if k == key]
    return values[0] if len(values) == 1 else values or None


def pattern(size):
    return bytes(i % 251 for i in range(size))


async def unary(stub):
    payload = b"unary \x00\xff" + bytes(range(256))
    response = await stub.Unary(pb.Request(payload=payload))
    expect(response.payload == payload, f"payload of {len(response.payload)} bytes differs")
    return "echoed 264 bytes"


async def client_stream(stub):
    parts = [b"part-%d:" % i + bytes([i] * i) for i in range(5)]
    response = await stub.ClientStream(iter(pb.Request(payload=p) for p in parts))
    expect(response.request_count == 5, f"request_count {response.request_count}")
    expect(response.payload == b"".join(parts), "concatenated payload differs")
    return "5 requests concatenated"


async def empty_client_stream(stub):
    response = await stub.ClientStream(iter(()))
    expect(response.request_count == 0, f"request_count {response.request_count}")
    expect(response.payload == b"", f"payload {response.payload!r}")
    return "no requests, count 0"


async def server_stream(stub):
    call = stub.ServerStream(pb.Request(payload=b"stream", response_count=5))
    payloads = [response.payload async for response in call]
    expected = [b"stream" + bytes([i]) for i in range(5)]
    expect(payloads == expected, f"got {payloads!r}")
    expect(await call.code() == grpc.StatusCode.OK, f"status {await call.code()}")
    return "5 responses, OK"


async def bidi(stub):
    call = stub.Bidi()
    for i in range(5):
        payload = b"ping-%d" % i
        await call.write(pb.Request(payload=payload))
        response = await call.read()
        expect(response is not aio.EOF, f"stream ended after {i} responses")
        expect(response.payload == payload, f"response {i}: {response.payload!r}")
        expect(response.request_count == i + 1, f"response {i}: count {response.request_count}")
    await call.done_writing()
    expect(await call.read() is aio.EOF, "a response after half-close")
    expect(await call.code() == grpc.StatusCode.OK, f"status {await call.code()}")
    return "5 ping-pongs, half-close, OK"


async def empty_bidi(stub):
    call = stub.Bidi(iter(()))
    responses = [response async for response in call]
    expect(not responses, f"{len(responses)} responses")
    expect(await call.code() == grpc.StatusCode.OK, f"status {await call.code()}")
    return "half-closed at once, no response, OK"


async def metadata(stub):
    ascii_value, bin_value = "hello, interop", bytes([0, 1, 2, 0xFE, 0xFF])
    call = stub.Unary(
        pb.Request(payload=b"md"),
        metadata=(("x-interop-ascii", ascii_value), ("x-interop-bin", bin_value)),
    )
    await call
    headers, trailers = await call.initial_metadata(), await call.trailing_metadata()
    expected = {
        "x-echo-ascii": (headers, ascii_value),
        "x-echo-bin": (headers, bin_value),
        "x-trailer-ascii": (trailers, "trailer " + ascii_value),
        "x-trailer-bin": (trailers, bytes(reversed(bin_value))),
    }
    for key, (where, value) in expected.items():
        got = metadata_value(where, key)
        expect(got == value, f"{key}: {got!r}, expected {value!r}")
    return "ascii and -bin echoed in headers and trailers"


def status_details(message):
    detail = any_pb2.Any(
        type_url="type.googleapis.com/interop.v1.Request",
        value=pb.Request(payload=b"detail").SerializeToString(),
    )
    return status_pb2.Status(code=9, message=message, details=[detail])


async def status(stub):
    message = "interop: précondition ✓ 100%"
    rich = status_details(message)
    details = rich.SerializeToString()
    call = stub.Unary(pb.Request(fail_code=9, fail_message=message, fail_details=details))
    try:
        await call
    except aio.AioRpcError as error:
        expect(error.code() == grpc.StatusCode.FAILED_PRECONDITION, f"code {error.code()}")
        expect(error.details() == message, f"message {error.details()!r}")
        got = metadata_value(error.trailing_metadata(), "grpc-status-details-bin")
        expect(got == details, f"grpc-status-details-bin {got!r}")
        # grpcio-status reads it back and checks it agrees with the status.
        expect(await rpc_status.aio.from_call(call) == rich, "grpcio-status read other details")
        return "FAILED_PRECONDITION, message and details exact"
    raise CheckFailed("the call succeeded")


async def large(stub):
    payload = pattern(8 << 20)
    response = await stub.Unary(pb.Request(payload=payload))
    expect(response.payload == payload, f"{len(response.payload)} bytes back, differing")
    return "8 MiB both ways"


async def gzip_client(stub):
    payload = b"compress me " * 20000
    response = await stub.Unary(pb.Request(payload=payload), compression=grpc.Compression.Gzip)
    expect(response.payload == payload, "payload differs")
    expect(response.request_compressed != "no", "the backend saw an uncompressed request")
    return f"backend saw compressed: {response.request_compressed}", response.request_compressed


async def gzip_server(stub):
    # Every interop backend compresses its responses when the client accepts gzip, as
    # grpcio clients do; grpcio does not tell whether a response arrived compressed.
    payload = b"compressed answer " * 20000
    response = await stub.Unary(pb.Request(payload=payload))
    expect(response.payload == payload, "payload differs")
    return "response intact (compression not visible in grpcio)", "unknown"


async def cancelled(stub, call_id):
    report = await stub.WasCancelled(pb.CancelQuery(call_id=call_id, wait_ms=5000))
    return report.cancelled


async def deadline(stub):
    call_id = str(uuid.uuid4())
    start = time.monotonic()
    try:
        await stub.Unary(pb.Request(sleep_ms=5000, call_id=call_id), timeout=0.3)
        raise CheckFailed("the call succeeded")
    except aio.AioRpcError as error:
        elapsed = time.monotonic() - start
        # A tonic server answers its own expired deadline with CANCELLED "Timeout expired"
        # (tonic 0.14); it wins the race with the client's timer now and then.
        if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
            by = "DEADLINE_EXCEEDED"
        elif error.code() == grpc.StatusCode.CANCELLED and error.details() == "Timeout expired":
            by = "tonic's deadline answer (CANCELLED)"
        else:
            raise CheckFailed(f"code {error.code()}: {error.details()}")
        expect(elapsed < 2.5, f"took {elapsed:.2f} s")
    expect(await cancelled(stub, call_id), "the backend did not see the call end")
    return f"{by} after {elapsed * 1000:.0f} ms; backend saw the call end"


async def cancel(stub):
    call_id = str(uuid.uuid4())
    call = stub.ServerStream(
        pb.Request(payload=b"c", response_count=1000, sleep_ms=20, call_id=call_id)
    )
    for _ in range(2):
        expect(await call.read() is not aio.EOF, "stream ended early")
    call.cancel()
    expect(await cancelled(stub, call_id), "the backend did not see the cancellation")
    return "backend saw the cancellation"


async def health_check(channel):
    stub = health_pb2_grpc.HealthStub(channel)
    for service in ("", "interop.v1.Interop"):
        response = await stub.Check(health_pb2.HealthCheckRequest(service=service))
        expect(
            response.status == health_pb2.HealthCheckResponse.SERVING,
            f"{service!r}: {response.status}",
        )
    return "SERVING for '' and interop.v1.Interop"


async def reflection(channel):
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    names = set()
    async for response in call:
        names.update(s.name for s in response.list_services_response.service)
    for wanted in ("interop.v1.Interop", "grpc.health.v1.Health"):
        expect(wanted in names, f"{wanted} not in {sorted(names)}")
    return f"{len(names)} services listed"


async def concurrent(stub):
    payloads = [b"call-%d" % i for i in range(100)]
    responses = await asyncio.gather(*(stub.Unary(pb.Request(payload=p)) for p in payloads))
    wrong = [i for i, r in enumerate(responses) if r.payload != payloads[i]]
    expect(not wrong, f"{len(wrong)} calls answered wrongly")
    return "100 calls at once, all exact"


CHECKS = [
    ("unary", unary),
    ("client_stream", client_stream),
    ("server_stream", server_stream),
    ("bidi", bidi),
    ("empty_client_stream", empty_client_stream),
    ("empty_bidi", empty_bidi),
    ("metadata", metadata),
    ("status", status),
    ("large_8mib", large),
    ("gzip_client", gzip_client),
    ("gzip_server", gzip_server),
    ("deadline", deadline),
    ("cancel", cancel),
    ("health", None),
    ("reflection", None),
    ("concurrent_100", concurrent),
]


async def run_check(name, check, channel, stub):
    if name == "health":
        outcome = health_check(channel)
    elif name == "reflection":
        outcome = reflection(channel)
    else:
        outcome = check(stub)
    try:
        result = await asyncio.wait_for(outcome, CHECK_TIMEOUT)
        detail, seen = result if isinstance(result, tuple) else (result, "")
        return True, detail, seen
    except CheckFailed as failure:
        return False, str(failure), ""
    except Exception as error:  # any other failure is a failed check, reported as is
        return False, f"{type(error).__name__}: {error}", ""


async def run_target(label, address):
    async with aio.insecure_channel(address, options=OPTIONS) as channel:
        stub = services.InteropStub(channel)
        for name, check in CHECKS:
            ok, detail, seen = await run_check(name, check, channel, stub)
            line = {"target": label, "check": name, "ok": ok, "detail": detail, "seen": seen}
            print(json.dumps(line), flush=True)


async def main(targets):
    exit_when_stdin_closes()
    # One target after another: the deadline and cancellation checks time things, so
    # they do not share the peers' CPU with 8 MiB messages.
    for target in targets:
        await run_target(*target.split("=", 1))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
