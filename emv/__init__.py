"""Pure payment-protocol logic: BER-TLV, tag dictionary, DOLs, APDUs, ODA and the kernels.

No I/O, no clock and no randomness of its own: everything is passed in.
"""
