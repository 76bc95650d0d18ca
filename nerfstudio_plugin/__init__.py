"""nerfstudio_plugin (see DESIGN.md)."""
