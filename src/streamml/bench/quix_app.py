"""The peer: the same scoring as an idiomatic Quix Streams application (StreamingDataFrame, per-record apply).

Runs as a script under an interpreter that has ``quixstreams`` (it may be another virtual environment than
streamml's, so it imports nothing from streamml) and speaks the protocol of :mod:`streamml.bench.child`.
"""

from __future__ import annotations

import json
import resource
import sys
import threading
import time
from typing import Any

FEATURES = ["Time"] + [f"V{i}" for i in range(1, 29)] + ["Amount"]


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _peak_rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(spec: dict[str, Any]) -> dict[str, Any]:
    import numpy as np
    import onnxruntime as ort
    import quixstreams
    from quixstreams import Application

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(spec["model_path"], sess_options=options)
    input_name = session.get_inputs()[0].name
    app = Application(
        broker_address=spec["bootstrap"],
        consumer_group=spec["group"],
        auto_offset_reset="earliest",
        processing_guarantee="exactly-once" if spec.get("exactly_once", True) else "at-least-once",
        loglevel="WARNING",
    )
    source = app.topic(spec["input"], value_deserializer="json", key_deserializer="bytes")
    sink = app.topic(spec["output"], value_serializer="json", key_serializer="bytes")
    state: dict[str, Any] = {"first": None, "cpu": 0.0, "records": 0}
    limit = spec.get("stop_after")

    def score(row: dict[str, Any]) -> dict[str, Any]:
        if state["first"] is None:
            state["first"], state["cpu"] = time.time(), _cpu()
        x = np.array([[row[f] for f in FEATURES]], dtype=np.float32)
        value = float(session.run(None, {input_name: x})[0][0])
        state["records"] += 1
        if limit is not None and state["records"] >= limit:
            app.stop()
        return {"Id": row["Id"], "score": value}

    sdf = app.dataframe(source)
    sdf = sdf.apply(score)
    sdf.to_topic(sink)

    go, stop = threading.Event(), threading.Event()

    def control() -> None:
        for line in sys.stdin:
            if line.strip() == "GO":
                go.set()
            elif line.strip() == "STOP":
                stop.set()
                app.stop()
        go.set()
        app.stop()

    threading.Thread(target=control, daemon=True).start()
    sys.stdout.write("READY\n")
    sys.stdout.flush()
    go.wait()
    if not stop.is_set():
        app.run()
    return {
        "first": state["first"],
        "cpu_s": _cpu() - state["cpu"] if state["first"] is not None else None,
        "peak_rss_mib": _peak_rss_mib(),
        "records": state["records"],
        "version": quixstreams.__version__,
    }


def main() -> int:
    spec = json.loads(sys.argv[1])
    try:
        result = run(spec)
    except Exception as exc:  # reported to the parent, which marks the scenario FAILED
        result = {"error": f"{type(exc).__name__}: {exc}"}
    sys.stdout.write("RESULT " + json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
