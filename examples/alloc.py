"""A program that allocates MIB mebibytes and prints a JSON object on its last line:
the command task of examples/commands.toml (see docs/guide/commands.md)."""

import json
import sys

mib = int(sys.argv[1])
block = bytearray(mib * 1024 * 1024)
for i in range(0, len(block), 4096):  # touch every page: resident, not just reserved
    block[i] = 1
print(f"allocated {mib} MiB", file=sys.stderr)
print(json.dumps({"allocated_mib": mib, "pages": len(block) // 4096}))
