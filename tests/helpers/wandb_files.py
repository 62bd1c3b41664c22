"""Reading an offline W&B run file (run-*.wandb) without the W&B service: its records, and the run they make."""
import json
import struct
from pathlib import Path


def wandb_records(path: Path):
    """The protobuf records of a .wandb file: a 7-byte header (':W&B', magic, version), then 32 KiB
    blocks of chunks (crc32c 4 bytes, length 2, type 1: full / first / middle / last)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, block, pos, buf = path.read_bytes(), 32768, 7, b""
    assert data[:4] == b":W&B", path
    while pos + 7 <= len(data):
        left = block - pos % block
        _, n, kind = struct.unpack("<IHB", data[pos:pos + 7]) if left >= 7 else (0, 0, 0)
        if kind == 0:  # the zero padding at a block's end
            pos += left
            continue
        buf += data[pos + 7:pos + 7 + n]
        pos += 7 + n
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(buf)
            yield record
            buf = b""


def read_run(run_file: Path) -> dict:
    """{run_id, group, project, name, config, summary, exited} of an offline run, the updates applied in order."""
    run = {"config": {}, "summary": {}, "exited": False, "history": []}
    for r in wandb_records(run_file):
        kind = r.WhichOneof("record_type")
        if kind == "run":
            run.update(run_id=r.run.run_id, group=r.run.run_group, project=r.run.project, name=r.run.display_name)
        elif kind in ("config", "summary"):
            run[kind].update({(u.key or "/".join(u.nested_key)): json.loads(u.value_json) for u in getattr(r, kind).update})
        elif kind == "history":
            run["history"].append({(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in r.history.item})
        elif kind == "exit":
            run["exited"] = True
    return run
