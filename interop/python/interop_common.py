"""What the grpcio server and client of the interop suite share: the generated code of
interop/proto/interop.proto (compiled at start by grpcio-tools) and channel options."""

import os
import sys
import threading

import grpc

PROTO_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "proto")
sys.path.insert(0, os.path.normpath(PROTO_DIR))

pb, services = grpc.protos_and_services("interop.proto")

# 8 MiB messages cross every hop, so every peer accepts up to 16 MiB.
MAX_MESSAGE = 16 << 20
OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE),
    ("grpc.max_send_message_length", MAX_MESSAGE),
]



def exit_when_stdin_closes():
    """The driver holds our stdin; when it goes away (even killed), so do we."""

    def wait():
        sys.stdin.read()
        os._exit(0)

    threading.Thread(target=wait, daemon=True).start()
