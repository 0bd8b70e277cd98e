"""Client loops for the replica tests: LOOPS threads, each with a grpcio channel and a
connection of its own (grpcio's own reconnects, no wait_for_ready), calling a unary METHOD over
and over with the request bytes REQUEST_HEX until standard input closes. An answer must
begin with the request's bytes (an echo of its field 1).

Usage: call_loops.py TARGET LOOPS METHOD REQUEST_HEX
Prints `STARTED` once every loop has had an answer, then at the end one JSON line:
{"ok": n, "failed": n, "errors": {"CODE: details": n}}."""

import json
import sys
import threading

import grpc


def main():
    target, loops, method = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    request = bytes.fromhex(sys.argv[4])
    stop = threading.Event()
    lock = threading.Lock()
    counts = {"ok": 0, "failed": 0, "errors": {}}
    answered = threading.Barrier(loops + 1)

    def failed(key):
        with lock:
            counts["failed"] += 1
            counts["errors"][key] = counts["errors"].get(key, 0) + 1

    def loop():
        # A connection of its own: grpcio otherwise shares one among channels to a target.
        channel = grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
        call = channel.unary_unary(method)  # bytes in, bytes out
        first = True
        while not stop.is_set():
            try:
                answer = call(request, timeout=10)
            except grpc.RpcError as error:
                failed(f"{error.code().name}: {error.details()}")
                continue
            if not answer.startswith(request):
                failed(f"wrong answer: {answer.hex()}")
                continue
            with lock:
                counts["ok"] += 1
            if first:
                first = False
                answered.wait()
        channel.close()

    threads = [threading.Thread(target=loop) for _ in range(loops)]
    for thread in threads:
        thread.start()
    answered.wait()
    print("STARTED", flush=True)
    sys.stdin.read()
    stop.set()
    for thread in threads:
        thread.join()
    print(json.dumps(counts), flush=True)


if __name__ == "__main__":
    main()
