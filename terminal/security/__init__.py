"""Who may do what at the terminal: the technician credential and the merchant PIN (hashed,
bound to the device), one lock-out policy for both (per credential and per caller, kept on
disk and authenticated), and the rule that refuses PINs too easy to guess."""
