"""The demo's dg defs folder: each subfolder's defs.yaml is a component (docs/components.md)."""
