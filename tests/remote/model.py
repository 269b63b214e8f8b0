"""A test model for MLServer: per-frame values that prove which frame an answer belongs to.

Inputs: one UINT8 tensor, the frame ([H, W, C] or as the metadata asks).
Outputs: `checksum` (UINT64, sum of the bytes), `first` (INT64, the first byte), `dims`
(INT64, the input's shape), and one detection: `boxes` (FP32 [1, 4], x1 y1 x2 y2 in pixels),
`scores` (FP32 [1]), `classes` (BYTES [1]).

Behaviour, from the environment of the server process:
- ORDERED_TEST_MODE=random (default): answer after a random delay of up to
  ORDERED_TEST_MAX_DELAY_MS (default 30), concurrently, so answers come back out of order.
- ORDERED_TEST_MODE=fixed: ORDERED_TEST_FIXED_MS of blocking work per request, one request at
  a time (the benchmark's server of fixed capacity).
- ORDERED_TEST_MODE=hang: never answer.
"""

import asyncio
import os
import random
import time

import numpy as np
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse, ResponseOutput


class FrameModel(MLModel):
    async def load(self) -> bool:
        self.mode = os.environ.get("ORDERED_TEST_MODE", "random")
        self.max_delay = float(os.environ.get("ORDERED_TEST_MAX_DELAY_MS", "30")) / 1000.0
        self.fixed = float(os.environ.get("ORDERED_TEST_FIXED_MS", "20")) / 1000.0
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        if self.mode == "hang":
            await asyncio.sleep(3600)
        elif self.mode == "fixed":
            time.sleep(self.fixed)
        else:
            await asyncio.sleep(random.uniform(0.0, self.max_delay))
        frame = NumpyCodec.decode_input(payload.inputs[0])
        flat = frame.reshape(-1).astype(np.uint64)
        shape = list(payload.inputs[0].shape)
        height = shape[-3] if len(shape) >= 3 else 1
        width = shape[-2] if len(shape) >= 3 else 1
        outputs = [
            ResponseOutput(name="checksum", shape=[1], datatype="UINT64", data=[int(flat.sum())]),
            ResponseOutput(name="first", shape=[1], datatype="INT64", data=[int(flat[0])]),
            ResponseOutput(name="dims", shape=[len(shape)], datatype="INT64", data=shape),
            ResponseOutput(
                name="boxes",
                shape=[1, 4],
                datatype="FP32",
                data=[1.0, 2.0, float(width // 2), float(height // 2)],
            ),
            ResponseOutput(name="scores", shape=[1], datatype="FP32", data=[0.75]),
            ResponseOutput(name="classes", shape=[1], datatype="BYTES", data=["thing"]),
        ]
        return InferenceResponse(model_name=self.name, id=payload.id, outputs=outputs)
