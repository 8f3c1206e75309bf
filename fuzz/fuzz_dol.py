"""DOLs from the card (PDOL, CDOL, DDOL) and the data built or split against them."""

import atheris
from common import main

from emv import dol


def target(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    dol_bytes = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 64))
    related = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 64))
    values = {fdp.ConsumeIntInRange(0, 0xFFFF): fdp.ConsumeBytes(8) for _ in range(4)}
    entries = dol.parse_dol(dol_bytes)
    built = dol.build_dol(entries, values)
    assert len(built) == dol.dol_length(entries)
    dol.split_dol_data(dol_bytes, related)


if __name__ == "__main__":
    main(target)
