"""Geometry: WGS84 photogrammetry, terrain and its uncertainty. No frameworks; the only I/O is
reading DEM and geoid rasters (geo/dem.py, geo/geoid.py), everything else is pure."""
