"""The grpcio backend of the interop suite: interop.v1.Interop (see interop.proto for what
each method answers), grpc.health.v1 and server reflection (v1alpha), on 127.0.0.1.

Prints `LISTENING <port>` once serving; exits when its standard input closes.
Responses are gzip-compressed whenever the client accepts gzip."""

import asyncio

import grpc
from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from grpc_status import rpc_status
from google.rpc import status_pb2

from interop_common import OPTIONS, exit_when_stdin_closes, pb, services

SERVICE = "interop.v1.Interop"


class Cancellations:
    """Which calls (by call_id) ended because their client went away."""

    def __init__(self):
        self.events = {}

    def event(self, call_id):
        return self.events.setdefault(call_id, asyncio.Event())

    def cancelled(self, call_id):
        if call_id:
            self.event(call_id).set()

    async def wait(self, call_id, wait_ms):
        try:
            await asyncio.wait_for(self.event(call_id).wait(), wait_ms / 1000)
            return True
        except asyncio.TimeoutError:
            return False


class Interop(services.InteropServicer):
    def __init__(self):
        self.cancellations = Cancellations()

    async def fail_if_asked(self, request, context):
        if request.fail_code:
            # The client sends a google.rpc.Status agreeing with fail_code and
            # fail_message; grpcio-status turns it into the status and its details trailer.
            rich = status_pb2.Status.FromString(request.fail_details)
            await context.abort_with_status(rpc_status.to_status(rich))

    def watch(self, request, context):
        """Marks the call cancelled if it ends that way, as grpcio reports it."""
        if request.call_id:
            call_id = request.call_id
            context.add_done_callback(
                lambda done: done.cancelled() and self.cancellations.cancelled(call_id)
            )

    async def sleep(self, request, context):
        """Sleeps `sleep_ms`; a call whose deadline comes first counts as ended by it.
        grpcio ends such a call itself, without always cancelling the handler."""
        remaining = context.time_remaining()
        if remaining is not None and remaining < request.sleep_ms / 1000:
            await asyncio.sleep(max(remaining, 0))
            raise asyncio.CancelledError("the deadline passed")
        await asyncio.sleep(request.sleep_ms / 1000)

    async def Unary(self, request, context):
        self.watch(request, context)
        metadata = dict(context.invocation_metadata())
        ascii_value = metadata.get("x-interop-ascii")
        bin_value = metadata.get("x-interop-bin")
        if ascii_value is not None or bin_value is not None:
            headers, trailers = [], []
            if ascii_value is not None:
                headers.append(("x-echo-ascii", ascii_value))
                trailers.append(("x-trailer-ascii", "trailer " + ascii_value))
            if bin_value is not None:
                headers.append(("x-echo-bin", bin_value))
                trailers.append(("x-trailer-bin", bytes(reversed(bin_value))))
            await context.send_initial_metadata(headers)
            context.set_trailing_metadata(trailers)
        finished = False
        try:
            await self.sleep(request, context)
            finished = True
        finally:
            if not finished:
                self.cancellations.cancelled(request.call_id)
        await self.fail_if_asked(request, context)
        return pb.Response(payload=request.payload, request_compressed="unknown")

    async def ClientStream(self, request_iterator, context):
        payload, count = b"", 0
        async for request in request_iterator:
            payload += request.payload
            count += 1
        return pb.Response(payload=payload, request_count=count)

    async def ServerStream(self, request, context):
        self.watch(request, context)
        await self.fail_if_asked(request, context)
        # A cancelled call ends this generator with CancelledError, or GeneratorExit at
        # a yield: whatever ends it early counts.
        finished = False
        try:
            for i in range(request.response_count):
                if i:
                    await self.sleep(request, context)
                yield pb.Response(payload=request.payload + bytes([i % 256]))
            finished = True
        finally:
            if not finished:
                self.cancellations.cancelled(request.call_id)

    async def Bidi(self, request_iterator, context):
        count = 0
        async for request in request_iterator:
            count += 1
            yield pb.Response(payload=request.payload, request_count=count)

    async def WasCancelled(self, request, context):
        cancelled = await self.cancellations.wait(request.call_id, request.wait_ms)
        return pb.CancelReport(cancelled=cancelled)


async def main():
    exit_when_stdin_closes()
    server = aio.server(options=OPTIONS, compression=grpc.Compression.Gzip)
    services.add_InteropServicer_to_server(Interop(), server)
    health_servicer = health.aio.HealthServicer()
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    await health_servicer.set(SERVICE, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(f"LISTENING {port}", flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(main())
