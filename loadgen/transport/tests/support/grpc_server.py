"""A gRPC server on gRPC's C core (Python grpcio): the second HTTP/2 and HPACK implementation
loadgen's own client is tested against (the first is the h2 crate, under hyper and tonic).
C core indexes response headers in the HPACK dynamic table and splits large messages its
own way, so the client's decoder meets what the Rust servers never send.

Usage: grpc_server.py PORT MAX_CONCURRENT_STREAMS. Prints "ready" once it serves. Methods
take and return raw bytes (no generated code):
  /test/Echo                the request message back, after 20 ms
  /test/Large               a 1 MiB message
  /test/Unavailable         status UNAVAILABLE
  /grpc.health.v1.Health/Check   SERVING
"""

import sys
import time
from concurrent import futures

import grpc


def echo(request, context):
    time.sleep(0.02)
    context.set_trailing_metadata((("x-trailer", "echoed"),))
    return request


def large(request, context):
    return b"\x07" * (1 << 20)


def unavailable(request, context):
    context.abort(grpc.StatusCode.UNAVAILABLE, "scripted")


def health(request, context):
    # HealthCheckResponse { status: SERVING (1) }
    return b"\x08\x01"


def main():
    port, max_streams = int(sys.argv[1]), int(sys.argv[2])
    raw = dict(request_deserializer=None, response_serializer=None)
    handlers = {
        "Echo": grpc.unary_unary_rpc_method_handler(echo, **raw),
        "Large": grpc.unary_unary_rpc_method_handler(large, **raw),
        "Unavailable": grpc.unary_unary_rpc_method_handler(unavailable, **raw),
    }
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=32),
        options=[
            ("grpc.max_concurrent_streams", max_streams),
            ("grpc.max_send_message_length", 4 << 20),
        ],
    )
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler("test", handlers),
            grpc.method_handlers_generic_handler(
                "grpc.health.v1.Health",
                {"Check": grpc.unary_unary_rpc_method_handler(health, **raw)},
            ),
        )
    )
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print("ready", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
