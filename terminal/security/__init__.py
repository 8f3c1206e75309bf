"""Who may do what at the terminal: the technician credential (PIN, lock-out, audit)."""
