"""The one place that assembles a terminal (keys, acquirer client, offline queue, journal,
reader, checkout) and runs its background forwarding loop; the demo terminal's simulated card
field and code scanner."""
