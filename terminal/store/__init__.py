"""What the terminal keeps on its own disk: the transaction journal, the keystore and the
sequence counter, the hash-chained audit log. Imports only :mod:`terminal.domain`."""
