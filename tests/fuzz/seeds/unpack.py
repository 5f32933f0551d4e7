#!/usr/bin/env python3
"""Writes the seeds of the `unpack` fuzz target into seeds/unpack/ (deterministic: same bytes
on every run; the files are checked in, run this after changing it).

Each seed is one byte choosing the format (0 tar, 1 tar.gz, 2 zip, else sniffed) and the
archive. The target unpacks into SCRATCH/run/vol/.versions/version beside the sentinel tree
SCRATCH/run/outside/, so the escape chains aim there: from the version's root, `../../..` is
SCRATCH/run.
"""

import gzip
import io
import os
import tarfile
import zipfile

MTIME = 1_700_000_000
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "unpack")
KIND = {"tar": 0, "tgz": 1, "zip": 2, "sniff": 3}
# No padding to 10 KiB records: small seeds mutate faster.
tarfile.RECORDSIZE = tarfile.BLOCKSIZE


def tar(entries, fmt=tarfile.GNU_FORMAT):
    """entries: (name, kind, mode, data or link target); kind is a tarfile type."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as archive:
        for name, kind, mode, extra in entries:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.mtime = kind, mode, MTIME
            data = None
            if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE):
                info.linkname = extra
            elif kind == tarfile.CHRTYPE:
                info.devmajor, info.devminor = 1, 3
            elif kind == tarfile.REGTYPE:
                info.size, data = len(extra), io.BytesIO(extra)
            archive.addfile(info, data)
    return buf.getvalue()


def tgz(data):
    return gzip.compress(data, mtime=0)


def zip_(entries):
    """entries: (name, kind, mode, data or link target); kind is "file", "dir" or "link"."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        for name, kind, mode, extra in entries:
            info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
            info.create_system = 3
            ftype = {"file": 0o100000, "dir": 0o040000, "link": 0o120000}[kind]
            info.external_attr = (ftype | mode) << 16
            if kind == "dir":
                info.external_attr |= 0x10
            info.compress_type = zipfile.ZIP_DEFLATED if kind == "file" else zipfile.ZIP_STORED
            data = extra.encode() if kind == "link" else extra
            archive.writestr(info, data)
    return buf.getvalue()


D, F, L, H = tarfile.DIRTYPE, tarfile.REGTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE

# A plain site: a setuid world-writable script, links inside, a hard link (tar only).
SITE = [
    ("site/", D, 0o755, b""),
    ("site/index.html", F, 0o644, b"<h1>hello</h1>"),
    ("site/run.sh", F, 0o4777, b"#!/bin/sh\necho hi\n"),
    ("site/default.html", L, 0o777, "index.html"),
    ("site/copy.html", H, 0o644, "site/index.html"),
    ("site/assets/", D, 0o2777, b""),
    ("site/assets/up", L, 0o777, "../index.html"),
]

# `d/l -> ..` makes `d/l/d/l/m` the root's `m`, which climbs to the sentinel tree; then a file
# through `f -> m/file` and a file below `m`. Refused at `d/l/d/l/m` (through a symlink).
CHAIN = [
    ("d/", D, 0o755, b""),
    ("d/l", L, 0o777, ".."),
    ("d/l/d/l/m", L, 0o777, "../../../outside"),
    ("f", L, 0o777, "m/file"),
    ("./f", F, 0o644, b"pwned"),
    ("m/x", F, 0o644, b"pwned"),
]

# Links only, each inside on its face: `d/a` is the root, `d/b` its parent, `d/c` the sentinel
# tree. Made, then refused when the kernel resolves them beneath the root.
LATE_CHAIN = [
    ("d/", D, 0o755, b""),
    ("d/a", L, 0o777, ".."),
    ("d/b", L, 0o777, "a/.."),
    ("d/c", L, 0o777, "b/../../outside"),
]

# The same, then a hard link to the sentinel file and a file through them (refused there).
THROUGH_LATE_CHAIN = LATE_CHAIN + [
    ("e", H, 0o644, "d/c/file"),
    ("d/c/dir/x", F, 0o644, b"pwned"),
]

# Names replaced by later entries: a file by a link, a link by a file, a file by a directory,
# a directory by a file (refused).
REPLACE = [
    ("a", F, 0o644, b"one"),
    ("a", L, 0o777, "b"),
    ("b", L, 0o777, "a"),
    ("b", F, 0o600, b"two"),
    ("c", F, 0o644, b"three"),
    ("c/", D, 0o755, b""),
    ("./", D, 0o1777, b""),
    ("c", F, 0o644, b"four"),
]

# Refused types: a character device and a FIFO.
SPECIAL = [
    ("ok", F, 0o644, b"ok"),
    ("null", tarfile.CHRTYPE, 0o666, b""),
    ("fifo", tarfile.FIFOTYPE, 0o666, b""),
]

LONG = [
    ("a/" + "long-name-" * 13 + "/file.txt", F, 0o644, b"long"),
    ("b/" + "link-" * 25, L, 0o777, "../a"),
]


def zip_entries(entries):
    kinds = {D: "dir", F: "file", L: "link"}
    return [(n, kinds[k], m, x) for n, k, m, x in entries if k in kinds]


SEEDS = {
    "tar-site": ("tar", tar(SITE)),
    "tgz-site": ("tgz", tgz(tar(SITE))),
    "zip-site": ("zip", zip_(zip_entries(SITE))),
    "tar-chain": ("tar", tar(CHAIN)),
    "tgz-chain-sniffed": ("sniff", tgz(tar(CHAIN))),
    "zip-chain": ("zip", zip_(zip_entries(CHAIN))),
    "tar-late-chain": ("tar", tar(LATE_CHAIN)),
    "zip-late-chain": ("zip", zip_(zip_entries(LATE_CHAIN))),
    "tar-through-late-chain": ("tar", tar(THROUGH_LATE_CHAIN)),
    "zip-through-late-chain": ("zip", zip_(zip_entries(THROUGH_LATE_CHAIN))),
    "tar-replace": ("tar", tar(REPLACE)),
    "tar-special": ("tar", tar(SPECIAL)),
    "tar-long-gnu": ("tar", tar(LONG)),
    "tar-long-pax": ("tar", tar(LONG, tarfile.PAX_FORMAT)),
    # Two gzip members, read as one stream.
    "tgz-two-members": ("tgz", tgz(tar(SITE[:2])[:1024]) + tgz(tar(SITE[:2])[1024:])),
    "zip-sniffed": (
        "sniff",
        zip_([("a.txt", "file", 0o644, b"a"), ("b", "link", 0o777, "a.txt")]),
    ),
}

if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    for name, (kind, data) in SEEDS.items():
        with open(os.path.join(OUT, name), "wb") as out:
            out.write(bytes([KIND[kind]]) + data)
