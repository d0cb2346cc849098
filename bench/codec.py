"""Codec throughput: encode and decode per record type, one core. Writes bench/results/codec.json.

Run: python -m bench.codec  (a few seconds; min of 3 repeats, so a busy shared machine
inflates the figures less).
"""

from __future__ import annotations

import json
import timeit
from pathlib import Path

from safehub.samples.records import every_record
from safehub.schemas import codec

N = 3000


def main() -> None:
    results = {}
    seen = set()
    for record in every_record():
        name = type(record).__name__
        if name in seen:
            continue
        seen.add(name)
        data = codec.encode(record)
        enc = min(timeit.repeat(lambda r=record: codec.encode(r), number=N, repeat=3)) / N
        dec = min(timeit.repeat(lambda d=data: codec.decode(d), number=N, repeat=3)) / N
        ref = min(timeit.repeat(lambda d=data: codec.decode_reference(d), number=N,
                                repeat=3)) / N
        enc_ref = min(timeit.repeat(lambda r=record: codec.encode_reference(r), number=N,
                                    repeat=3)) / N
        results[name] = {
            "bytes": len(data),
            "encode_us": round(enc * 1e6, 1),
            "encode_fastavro_path_us": round(enc_ref * 1e6, 1),
            "decode_us": round(dec * 1e6, 1),
            "decode_fastavro_path_us": round(ref * 1e6, 1),
            "decodes_per_s": int(1 / dec),
        }
        print(name, results[name])
    out = Path(__file__).with_name("results") / "codec.json"
    out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
