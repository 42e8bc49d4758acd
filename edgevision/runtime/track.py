"""Tracking IDs for detections across a stream's frames: ByteTrack from Roboflow's `trackers`
package (pip install 'edgevision[track]'), one tracker per source, fed in frame order."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgevision.errors import BackendError
from edgevision.runtime.results import Detections


def require_tracker() -> Any:
    """The trackers and supervision modules, or a clear error naming the extra to install."""
    try:
        import supervision
        import trackers
    except ImportError:
        raise BackendError("tracking needs the 'track' extra (ByteTrack from the trackers package): "
                           "pip install 'edgevision[track]'") from None
    return trackers, supervision


class Tracker:
    def __init__(self, fps: float) -> None:
        trackers, sv = require_tracker()
        self._sv: Any = sv
        self._tracker = trackers.ByteTrackTracker(frame_rate=float(fps or 30.0))

    def update(self, result: Detections) -> None:
        """Set result.track_ids ([N] int, -1 while a new object is not yet confirmed)."""
        sv = self._sv
        found = sv.Detections(xyxy=result.boxes.astype(np.float32), confidence=result.scores,
                              class_id=result.class_ids.astype(int), data={"row": np.arange(len(result))})
        tracked = self._tracker.update(found)  # may reorder and leave detections out
        ids = np.full(len(result), -1, dtype=np.int64)
        if len(tracked):
            ids[np.asarray(tracked.data["row"], dtype=int)] = np.asarray(tracked.tracker_id, dtype=np.int64)
        result.track_ids = ids
