"""The two models of a cascade, for MLServer: a detector on whole frames and a classifier on
the crops of what it found.

`detect`: the frame's objects are squares of one grey level on a darker background; answers a
box around each level it knows (200: class `a`, 100: class `b`) that the frame holds:
`boxes` (FP32 [N, 4], x1 y1 x2 y2 in pixels), `scores` (FP32 [N]) and `classes` (BYTES [N]).

`classify`: answers what one crop shows: `label` (BYTES [1]: `a` or `b`, whichever level covers
more of it) and `pixels` (INT64 [1]: how many pixels it was sent).
"""

import numpy as np
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse, ResponseOutput

LEVELS = [(200, "a"), (100, "b")]


class DetectModel(MLModel):
    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        frame = NumpyCodec.decode_input(payload.inputs[0])
        luma = frame[..., 0]
        boxes, scores, classes = [], [], []
        for level, name in LEVELS:
            ys, xs = np.nonzero(luma == level)
            if len(xs) == 0:
                continue
            boxes += [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]
            scores.append(0.9)
            classes.append(name)
        outputs = [
            ResponseOutput(name="boxes", shape=[len(classes), 4], datatype="FP32", data=boxes),
            ResponseOutput(name="scores", shape=[len(classes)], datatype="FP32", data=scores),
            ResponseOutput(name="classes", shape=[len(classes)], datatype="BYTES", data=classes),
        ]
        return InferenceResponse(model_name=self.name, id=payload.id, outputs=outputs)


class ClassifyModel(MLModel):
    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        crop = NumpyCodec.decode_input(payload.inputs[0])
        luma = crop[..., 0]
        counts = {name: int((luma == level).sum()) for level, name in LEVELS}
        label = max(counts, key=counts.get)
        outputs = [
            ResponseOutput(name="label", shape=[1], datatype="BYTES", data=[label]),
            ResponseOutput(name="pixels", shape=[1], datatype="INT64", data=[int(luma.size)]),
        ]
        return InferenceResponse(model_name=self.name, id=payload.id, outputs=outputs)
