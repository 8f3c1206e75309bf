"""Stand-ins for the outside world: virtual cards, wallets, readers and the acquirer host."""
