#!/usr/bin/env python3
"""Canonical form of a built image, for comparing kiln with BuildKit.

usage: flatten.py ROOTFS.tar IMAGE.json BASE.tar BASE.json > result.json

ROOTFS.tar is the image's filesystem flattened (`build -o type=tar`), IMAGE.json holds its
`Config` and `History` as docker shows them. The BASE pair is the same for the base image: its
files and history are left out, so a result holds what the Dockerfile made. Mtimes are not
compared (they are build times); everything else of each path is: type, mode, owner, size,
content digest, link target; hard links as groups; the config fields a user sees and the
history lines `docker history` prints.
"""
import hashlib
import json
import sys
import tarfile

TYPES = {
    tarfile.REGTYPE: "file", tarfile.AREGTYPE: "file", tarfile.LNKTYPE: "hardlink",
    tarfile.SYMTYPE: "symlink", tarfile.CHRTYPE: "char", tarfile.BLKTYPE: "block",
    tarfile.DIRTYPE: "dir", tarfile.FIFOTYPE: "fifo",
}
CONFIG = ["Env", "Cmd", "Entrypoint", "WorkingDir", "User", "Labels", "ExposedPorts",
          "Volumes", "StopSignal", "Healthcheck", "Shell", "OnBuild"]


def files(path):
    out, links = {}, {}
    with tarfile.open(path, encoding="utf-8", errors="surrogateescape") as t:
        members = t.getmembers()
        content = {}
        for m in members:
            name = m.name.lstrip("./").rstrip("/")
            if not name:
                continue
            kind = TYPES.get(m.type, "other")
            digest = ""
            if m.isfile():
                digest = hashlib.sha256(t.extractfile(m).read()).hexdigest()[:16]
                content[name] = (m.size, digest)
            target = m.linkname.lstrip("./") if kind == "hardlink" else m.linkname
            if kind == "hardlink":
                links.setdefault(target, [target]).append(name)
                size, digest = content.get(target, (0, ""))
                kind = "file"
            else:
                size = m.size if m.isfile() else 0
            xattrs = sorted(k for k in (m.pax_headers or {}) if k.startswith("SCHILY.xattr."))
            out[name] = " ".join(str(x) for x in [
                kind, oct(m.mode & 0o7777), f"{m.uid}:{m.gid}", size, digest or "-",
                (target if m.issym() else "-") or "-",
            ] + xattrs)
    groups = sorted(sorted(set(g)) for g in links.values())
    return out, groups


def image(path):
    v = json.load(open(path))
    if isinstance(v, list):
        v = v[0]
    c = v.get("Config") or {}
    config = {k: (c.get(k) or None) for k in CONFIG}
    history = [[h.get("created_by", ""), bool(h.get("empty_layer", False))]
               for h in v.get("History") or []]
    return config, history


def key(name):
    return name.encode("utf-8", "surrogateescape").hex() if any(
        0xDC80 <= ord(ch) <= 0xDCFF for ch in name) else name


def main():
    fs, groups = files(sys.argv[1])
    config, history = image(sys.argv[2])
    base_fs, _ = files(sys.argv[3])
    _, base_history = image(sys.argv[4])
    result = {
        "files": {key(p): v for p, v in sorted(fs.items()) if base_fs.get(p) != v},
        "deleted": sorted(key(p) for p in base_fs if p not in fs),
        "hardlinks": [[key(p) for p in g] for g in groups],
        "config": config,
        # A stage on the base shows the base's history first; FROM scratch does not.
        "history": history[len(base_history):]
        if history[:len(base_history)] == base_history else history,
    }
    json.dump(result, sys.stdout, indent=1, sort_keys=True, ensure_ascii=True)
    sys.stdout.write("\n")


main()
