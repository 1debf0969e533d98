"""Digital twins: discovery, the dt.yaml manifest, validation, configurations, templates."""
