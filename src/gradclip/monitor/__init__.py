"""Gradient monitoring (core): :class:`GradMonitor`, its events and sinks.

Step record (one per optimizer step, ``"kind": "step"``)::

    {"kind": "step", "step": 12, "norm": 3.1, "clipped_norm": 1.0,
     "clip_coef": 0.32, "threshold": 1.0, "clipped": true, "skipped": false,
     "finite": true, "layers": {"rnn": 2.9, "embedding": 0.8},
     "update_ratio": {"rnn": 0.0012, "embedding": 0.0004}}   # every k-th step

Event record (``"kind": "event"``)::

    {"kind": "event", "step": 40, "event": "explosion" | "vanishing" | "nonfinite",
     "message": "step 40: ...", "value": 53.1, "reference": 1.2,
     "layer": null, "parameter": null}
"""

from gradclip.monitor.core import GradMonitor, GradMonitorWarning
from gradclip.monitor.events import EventDetector, EventRules
from gradclip.monitor.grouping import Grouping, default_group_by
from gradclip.monitor.sinks import JsonlSink, MemorySink, Sink, TensorBoardSink, strict_json
from gradclip.monitor.summary import Summary, percentile

__all__ = [
    "EventDetector",
    "EventRules",
    "GradMonitor",
    "GradMonitorWarning",
    "Grouping",
    "JsonlSink",
    "MemorySink",
    "Sink",
    "Summary",
    "TensorBoardSink",
    "default_group_by",
    "percentile",
    "strict_json",
]
