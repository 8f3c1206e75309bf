"""CA public key and terminal parameter files, as a technician or a download delivers them."""

import contextlib
import json

from common import main

from emv.capk import CaKeyStore
from terminal.domain.params import ParamsError, parse_params


def target(data: bytes) -> None:
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return  # not JSON: the file loader's own check (tests/test_fuzz.py covers it)
    with contextlib.suppress(ParamsError):
        parse_params(doc, "fuzz.json")
    CaKeyStore.from_json_list(doc if isinstance(doc, list) else [doc])


if __name__ == "__main__":
    main(target)
