"""A misbehaving Open Inference Protocol server for the tests, REST and gRPC in one process.

    fake_server.py MODE HTTP_PORT GRPC_PORT

Both transports answer readiness and model metadata like a healthy server; inference:
- garbage: REST answers a body that is not JSON, gRPC a tensor whose raw contents do not fit
  its shape;
- wrong-id: a well-formed answer whose id is not the request's;
- echo-auth: a well-formed answer with one output, `auth`, holding the Authorization header.
Prints `ready` once both listen on 127.0.0.1.
"""

import json
import sys
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


def answer(request_id, auth):
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
            self.reply(200, json.dumps({"name": "fake", "extensions": []}).encode())
        elif self.path == "/v2/models/frames":
            self.reply(200, json.dumps(METADATA).encode())
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
        request = json.loads(body)
        self.reply(200, json.dumps(answer(request["id"], self.headers.get("Authorization"))).encode())


class Grpc(pb_grpc.GRPCInferenceServiceServicer):
    def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=True)

    def ModelMetadata(self, request, context):
        return pb.ModelMetadataResponse(
            name="frames", platform="fake",
            inputs=[pb.ModelMetadataResponse.TensorMetadata(
                name="frame", datatype="UINT8", shape=[-1, -1, -1])])

    def ModelInfer(self, request, context):
        if MODE == "garbage":
            return pb.ModelInferResponse(
                id=request.id,
                outputs=[pb.ModelInferResponse.InferOutputTensor(
                    name="checksum", datatype="FP64", shape=[4])],
                raw_output_contents=[b"\x01\x02\x03"])
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


def main():
    http = ThreadingHTTPServer(("127.0.0.1", HTTP_PORT), Rest)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(Grpc(), server)
    server.add_insecure_port(f"127.0.0.1:{GRPC_PORT}")
    server.start()
    print("ready", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
