"""Platform services: the catalogue, health checks, the embedded MQTT broker, connections."""
