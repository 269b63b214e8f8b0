#!/usr/bin/env python3
"""Prints the detections `metapublish` sends to an MQTT broker, as they arrive.

    examples/mqtt_consumer.py mqtt://127.0.0.1:1883/gst-ordered/demo [--until-eos]

One line per frame with regions of interest (its sequence number, time and each region's
type, box and detection confidence when it has one), one per gap record (frames that will
never come, and why), a warning when a frame arrives out of order, and at the `eos` record
(with --until-eos: then it exits) a summary. With QoS 1 a record can come twice around a
reconnection: the repeat is skipped. Needs paho-mqtt (Debian: python3-paho-mqtt).
Records are JSON (schema version 1, README "Results out: metapublish").
"""

import json
import sys
from urllib.parse import urlparse, unquote

import paho.mqtt.client as mqtt


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    until_eos = "--until-eos" in sys.argv
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    url = urlparse(args[0])
    if url.scheme != "mqtt" or not url.path.strip("/"):
        print("usage: mqtt_consumer.py mqtt://host:port/topic", file=sys.stderr)
        return 2
    topic = unquote(url.path.lstrip("/"))
    state = {"frames": 0, "gaps": 0, "regions": 0, "last": None, "disorder": 0}
    seen = set()

    def on_connect(client, *rest):
        client.subscribe(topic, qos=1)

    def on_subscribe(*rest):
        print("subscribed to", topic, flush=True)

    def on_message(client, userdata, message):
        record = json.loads(message.payload)
        kind = record["type"]
        if kind == "frame":
            if record["seq"] is not None:
                key = (record["epoch"], record["seq"])
                if key in seen:
                    return  # a QoS 1 repeat
                seen.add(key)
                if state["last"] is not None and key < state["last"]:
                    state["disorder"] += 1
                    print(f"out of order: {key} after {state['last']}", flush=True)
                state["last"] = key
            state["frames"] += 1
            rois = record.get("rois", [])
            state["regions"] += len(rois)
            if rois:
                boxes = []
                for roi in rois:
                    box = f"{roi['type']} ({roi['x']},{roi['y']} {roi['w']}x{roi['h']})"
                    detection = roi["params"].get("detection", {})
                    if "confidence" in detection:
                        box += f" {detection['confidence']:.2f}"
                    boxes.append(box)
                pts = record["pts"] / 1e9 if record["pts"] is not None else float("nan")
                print(f"#{record['seq']} {pts:7.3f}s: {', '.join(boxes)}", flush=True)
        elif kind == "flush":
            state["last"] = None  # a seek: the sequence starts again
            seen.clear()
        elif kind == "gap":
            state["gaps"] += 1
            print(f"#{record['seq']} gap of {record['count']} ({record['reason']})", flush=True)
        elif kind == "eos":
            print(
                f"eos: {state['frames']} frames, {state['gaps']} gaps, "
                f"{state['regions']} regions, {state['disorder']} out of order",
                flush=True,
            )
            if until_eos:
                client.disconnect()

    if hasattr(mqtt, "CallbackAPIVersion"):  # paho-mqtt 2
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    else:
        client = mqtt.Client()
    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.connect(url.hostname or "127.0.0.1", url.port or 1883)
    try:
        client.loop_forever()
    except KeyboardInterrupt:
        pass
    return 1 if state["disorder"] else 0


if __name__ == "__main__":
    sys.exit(main())
