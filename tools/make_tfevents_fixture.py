#!/usr/bin/env python3
"""Golden TensorBoard event records for crates/formats/src/tfevents.rs, written by TensorBoard's own
Python writer (protobuf `tensorflow.Event` from tensorboard.compat.proto, framed by
tensorboard.summary.writer.record_writer.RecordWriter), with fixed wall times so the bytes are
reproducible. Also reads the file back with TensorBoard's EventFileLoader as a check.

Usage: /work/venv/bin/python tools/make_tfevents_fixture.py crates/formats/tests/fixtures/tfevents.bin
(venv: pip install tensorboard; a measuring/reference tool, never a product dependency)
"""
import io
import sys

from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.record_writer import RecordWriter
from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader

out = sys.argv[1]
png = bytes(range(0, 201, 7))
events = [
    event_pb2.Event(wall_time=1_700_000_000.25, step=0, file_version="brain.Event:2"),
    event_pb2.Event(wall_time=1_700_000_001.5, step=3, summary=summary_pb2.Summary(
        value=[summary_pb2.Summary.Value(tag="loss/G", simple_value=0.6875)])),
    event_pb2.Event(wall_time=1_700_000_002.75, step=123_456_789_012, summary=summary_pb2.Summary(
        value=[summary_pb2.Summary.Value(tag="fid", simple_value=-2.5e-4)])),
    event_pb2.Event(wall_time=1_700_000_003.0, step=7, summary=summary_pb2.Summary(
        value=[summary_pb2.Summary.Value(tag="samples/grid", image=summary_pb2.Summary.Image(
            height=2, width=3, colorspace=3, encoded_image_string=png))])),
]
buf = io.BytesIO()
w = RecordWriter(buf)
for e in events:
    w.write(e.SerializeToString())
data = buf.getvalue()
with open(out, "wb") as f:
    f.write(data)
back = [event_pb2.Event.FromString(r) for r in RawEventFileLoader(out).Load()]
assert back == events, back
print(f"wrote {len(data)} bytes, {len(back)} events, read back equal")
