"""Discord alerts: best effort, never in the way of a detection."""
