"""A misbehaving Open Inference Protocol server for the tests, REST and gRPC in one process.

    fake_server.py MODE HTTP_PORT GRPC_PORT

Both transports answer readiness and model metadata like a healthy server; inference:
- garbage: REST answers a body that is not JSON, gRPC a tensor whose raw contents do not fit
  its shape;
- wrong-id: a well-formed answer whose id is not the request's;
- echo-auth: a well-formed answer with one output, `auth`, holding the Authorization header
  (the headers seen are also listed by `GET /counts`, as `auth`);
- big: a well-formed answer carrying a 2 MiB output;
- binary (REST only): lists the binary tensor extension in `GET /v2`, reads binary requests
  and answers `checksum` (UINT64) and `dims` (INT64) as binary data and `binary-request`
  (BOOL, JSON) saying whether the request came in binary;
- refuse: refuses every inference request (REST: 400, gRPC: INVALID_ARGUMENT);
- slow: answers each request after 10 s unless the client gives it up first (gRPC: the call
  is cancelled; REST: the connection is closed), which it notices within 10 ms; counts
  requests started, cancelled and answered, told by `GET /counts` as JSON;
- count: answers each request after 20 ms, counting the requests in progress at once
  (`concurrent`, and the most: `max-concurrent`) and `answered`;
- batch: a model with a batch dimension (input `[-1, -1, -1, -1]`) run by one model
  instance, one request at a time: each costs 10 ms + 1 ms per frame, and answers per frame
  `sum` (UINT64 `[N]`: the sum of that frame's bytes) and `batch` (INT64 `[N]`: N); counts
  `answered`, `frames` and `max-batch`;
- geometry (REST only): answers what it was sent: `shape` (INT64 `[3]`), `sum` (UINT64: of
  all bytes) and `first` (UINT8: the first pixel's bytes), and one detection, `boxes`
  (FP32 `[1, 4]`: x1, y1, x2, y2 = 1, 1, 3, 3 in pixels of the input) with `scores` (`[1]`:
  0.5) and `classes` (BYTES `[1]`: `inner`).
Prints `ready` once both listen on 127.0.0.1.
"""

import json
import select
import socket
import struct
import sys
import time
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import threading

import grpc
from mlserver.grpc import dataplane_pb2 as pb
from mlserver.grpc import dataplane_pb2_grpc as pb_grpc

MODE = sys.argv[1]
HTTP_PORT = int(sys.argv[2])
GRPC_PORT = int(sys.argv[3])
METADATA = {
    "name": "frames",
    "platform": "fake",
    "inputs": [{"name": "frame", "datatype": "UINT8", "shape": [-1, -1, -1]}],
    "outputs": [],
}


BIG = "x" * (2 << 20)
SLOW_S = 10.0
COUNTS = {"started": 0, "cancelled": 0, "answered": 0, "auth": [],
          "concurrent": 0, "max-concurrent": 0, "frames": 0, "max-batch": 0}
COUNTS_LOCK = threading.Lock()
# The one model instance of `batch`.
MODEL_LOCK = threading.Lock()
if MODE == "batch":
    METADATA["inputs"][0]["shape"] = [-1, -1, -1, -1]


def counted(run):
    """Runs `run()` counted as a request in progress (mode `count`)."""
    with COUNTS_LOCK:
        COUNTS["concurrent"] += 1
        COUNTS["max-concurrent"] = max(COUNTS["max-concurrent"], COUNTS["concurrent"])
    try:
        return run()
    finally:
        with COUNTS_LOCK:
            COUNTS["concurrent"] -= 1
            COUNTS["answered"] += 1


def batch_answer(request_id, shape, data):
    """Mode `batch`: per frame, the sum of its bytes; one request at a time."""
    n = shape[0]
    per = len(data) // n
    with MODEL_LOCK:
        time.sleep(0.010 + 0.001 * n)
    sums = [sum(data[i * per:(i + 1) * per]) for i in range(n)]
    with COUNTS_LOCK:
        COUNTS["answered"] += 1
        COUNTS["frames"] += n
        COUNTS["max-batch"] = max(COUNTS["max-batch"], n)
    return {"id": request_id, "outputs": [
        {"name": "sum", "datatype": "UINT64", "shape": [n], "data": sums},
        {"name": "batch", "datatype": "INT64", "shape": [n], "data": [n] * n}]}


def count(what):
    with COUNTS_LOCK:
        COUNTS[what] += 1


def wait_unless_gone(gone):
    """Waits SLOW_S unless `gone()` turns true first; says whether the client stayed."""
    count("started")
    until = time.monotonic() + SLOW_S
    while time.monotonic() < until:
        if gone():
            count("cancelled")
            return False
        time.sleep(0.01)
    count("answered")
    return True


def answer(request_id, auth):
    with COUNTS_LOCK:
        if auth and auth not in COUNTS["auth"]:
            COUNTS["auth"].append(auth)
    if MODE == "big":
        return {"id": request_id, "outputs": [
            {"name": "blob", "datatype": "BYTES", "shape": [1], "data": [BIG]}]}
    if MODE == "wrong-id":
        return {"id": "wrong-" + request_id, "outputs": [
            {"name": "checksum", "datatype": "UINT64", "shape": [1], "data": [0]}]}
    return {"id": request_id, "outputs": [
        {"name": "auth", "datatype": "BYTES", "shape": [1], "data": [auth or ""]}]}


class Rest(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, body, content_type="application/json"):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/v2/health/ready":
            self.reply(200, b"")
        elif self.path == "/v2":
            extensions = ["binary_tensor_data"] if MODE == "binary" else []
            self.reply(200, json.dumps({"name": "fake", "extensions": extensions}).encode())
        elif self.path == "/v2/models/frames":
            self.reply(200, json.dumps(METADATA).encode())
        elif self.path == "/counts":
            with COUNTS_LOCK:
                self.reply(200, json.dumps(COUNTS).encode())
        else:
            self.reply(404, b"{}")

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path != "/v2/models/frames/infer":
            self.reply(404, b"{}")
            return
        if MODE == "garbage":
            self.reply(200, b"<<this is not an inference response>>")
            return
        if MODE == "refuse":
            self.reply(400, json.dumps({"error": "refused by the test server"}).encode())
            return
        if MODE == "binary":
            self.binary(body)
            return
        request = json.loads(body)
        if MODE == "slow" and not wait_unless_gone(self.client_gone):
            self.close_connection = True
            return
        if MODE == "count":
            counted(lambda: time.sleep(0.020))
        if MODE == "geometry":
            tensor = request["inputs"][0]
            data = bytes(tensor["data"])
            shape = tensor["shape"]
            self.reply(200, json.dumps({"id": request["id"], "outputs": [
                {"name": "shape", "datatype": "INT64", "shape": [3], "data": shape},
                {"name": "sum", "datatype": "UINT64", "shape": [1], "data": [sum(data)]},
                {"name": "first", "datatype": "UINT8", "shape": [shape[2]],
                 "data": list(data[:shape[2]])},
                {"name": "boxes", "datatype": "FP32", "shape": [1, 4], "data": [1, 1, 3, 3]},
                {"name": "scores", "datatype": "FP32", "shape": [1], "data": [0.5]},
                {"name": "classes", "datatype": "BYTES", "shape": [1], "data": ["inner"]},
            ]}).encode())
            return
        if MODE == "batch":
            tensor = request["inputs"][0]
            self.reply(200, json.dumps(
                batch_answer(request["id"], tensor["shape"], bytes(tensor["data"]))).encode())
            return
        self.reply(200, json.dumps(answer(request["id"], self.headers.get("Authorization"))).encode())

    def client_gone(self):
        """The client closed the connection (it sends nothing more while it waits)."""
        readable, _, _ = select.select([self.connection], [], [], 0)
        if not readable:
            return False
        try:
            return self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True


    def binary(self, body):
        header_length = self.headers.get("Inference-Header-Content-Length")
        if header_length is None:
            request, data = json.loads(body), None
            tensor = request["inputs"][0]
            data = bytes(tensor["data"])
        else:
            request = json.loads(body[: int(header_length)])
            tensor = request["inputs"][0]
            data = body[int(header_length):][: tensor["parameters"]["binary_data_size"]]
        dims = tensor["shape"]
        raw_checksum = struct.pack("<Q", sum(data))
        raw_dims = struct.pack(f"<{len(dims)}q", *dims)
        reply = json.dumps({"id": request["id"], "outputs": [
            {"name": "checksum", "datatype": "UINT64", "shape": [1],
             "parameters": {"binary_data_size": len(raw_checksum)}},
            {"name": "binary-request", "datatype": "BOOL", "shape": [1],
             "data": [header_length is not None]},
            {"name": "dims", "datatype": "INT64", "shape": [len(dims)],
             "parameters": {"binary_data_size": len(raw_dims)}},
        ]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Inference-Header-Content-Length", str(len(reply)))
        self.send_header("Content-Length", str(len(reply) + len(raw_checksum) + len(raw_dims)))
        self.end_headers()
        self.wfile.write(reply + raw_checksum + raw_dims)


class Grpc(pb_grpc.GRPCInferenceServiceServicer):
    def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=True)

    def ModelMetadata(self, request, context):
        return pb.ModelMetadataResponse(
            name="frames", platform="fake",
            inputs=[pb.ModelMetadataResponse.TensorMetadata(
                name="frame", datatype="UINT8", shape=METADATA["inputs"][0]["shape"])])

    def ModelInfer(self, request, context):
        if MODE == "refuse":
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "refused by the test server")
        if MODE == "garbage":
            return pb.ModelInferResponse(
                id=request.id,
                outputs=[pb.ModelInferResponse.InferOutputTensor(
                    name="checksum", datatype="FP64", shape=[4])],
                raw_output_contents=[b"\x01\x02\x03"])
        if MODE == "slow" and not wait_unless_gone(lambda: not context.is_active()):
            return pb.ModelInferResponse()
        if MODE == "count":
            counted(lambda: time.sleep(0.020))
        if MODE == "batch":
            reply = batch_answer(request.id, list(request.inputs[0].shape),
                                 request.raw_input_contents[0])
            outputs = []
            for out in reply["outputs"]:
                tensor = pb.ModelInferResponse.InferOutputTensor(
                    name=out["name"], datatype=out["datatype"], shape=out["shape"])
                if out["datatype"] == "UINT64":
                    tensor.contents.uint64_contents.extend(out["data"])
                else:
                    tensor.contents.int64_contents.extend(out["data"])
                outputs.append(tensor)
            return pb.ModelInferResponse(model_name="frames", id=reply["id"], outputs=outputs)
        auth = dict(context.invocation_metadata()).get("authorization")
        reply = answer(request.id, auth)
        out = reply["outputs"][0]
        tensor = pb.ModelInferResponse.InferOutputTensor(
            name=out["name"], datatype=out["datatype"], shape=out["shape"])
        if out["datatype"] == "BYTES":
            tensor.contents.bytes_contents.extend([v.encode() for v in out["data"]])
        else:
            tensor.contents.uint64_contents.extend(out["data"])
        return pb.ModelInferResponse(model_name="frames", id=reply["id"], outputs=[tensor])


class Server(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        # Clients that refuse an answer hang up mid-write (max-response-bytes): expected.
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


def main():
    http = Server(("127.0.0.1", HTTP_PORT), Rest)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=64))
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(Grpc(), server)
    server.add_insecure_port(f"127.0.0.1:{GRPC_PORT}")
    server.start()
    print("ready", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
