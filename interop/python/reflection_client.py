"""A grpcio-reflection client, as grpcurl's `list` and `describe` are: lists the services
a server reflects (grpc.reflection.v1alpha, what grpcio-reflection speaks) and describes
each one (its file and its methods) through a descriptor pool fed by reflection.

Usage: reflection_client.py HOST:PORT
Prints one JSON line: {"services": [...], "described": {service: {"file", "methods"} or
{"error"}}}.
"""

import json
import sys

import grpc
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)


def main():
    target = sys.argv[1]
    with grpc.insecure_channel(target) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        services = sorted(database.get_services())
        pool = DescriptorPool(database)
        described = {}
        for name in services:
            try:
                service = pool.FindServiceByName(name)
                described[name] = {
                    "file": service.file.name,
                    "methods": [method.name for method in service.methods],
                }
            except Exception as error:  # noqa: BLE001 - the test shows what failed
                described[name] = {"error": f"{type(error).__name__}: {error}"}
    print(json.dumps({"services": services, "described": described}))


if __name__ == "__main__":
    main()
