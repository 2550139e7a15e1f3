"""Pure geometry: WGS84 photogrammetry and its uncertainty. No I/O, no frameworks."""
