"""Detection API: AI detections from drone and camera imagery to TAK map markers."""

__version__ = "0.1.0"
