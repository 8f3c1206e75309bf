"""The durable store of payments, its limits and the forwarder that syncs it."""
