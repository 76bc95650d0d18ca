"""Data tools: COLMAP posing, benchmark importers, sparse-view splits and procedural scenes.

Stands on its own; uses only reconfusion's format modules (cameras, scene, files).
"""
