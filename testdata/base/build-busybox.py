#!/usr/bin/env python3
"""Builds testdata/base/busybox-oci/: a one-layer busybox image as an OCI image layout.

The binary comes from Debian's busybox-static package (GPL-2.0; see README.md here). Output is
deterministic: fixed timestamps, sorted PAX tar entries, uid/gid 0, gzip without name or mtime,
JSON with sorted keys, so rerunning the script on the same package reproduces the same digests.

Usage: python3 testdata/base/build-busybox.py [--busybox /bin/busybox] [--out DIR]
       python3 testdata/base/build-busybox.py --arch arm64 --busybox BUSYBOX_ARM64 \
           --out testdata/base/busybox-arm64-oci
(`apt-get install busybox-static` provides /bin/busybox; the arm64 one comes from Debian's
arm64 package: `dpkg --add-architecture arm64 && apt-get update && apt-get download
busybox-static:arm64 && dpkg-deb -x busybox-static_*_arm64.deb x`, then x/bin/busybox. Its
applet list is read from the host's busybox of the same version, which need not run arm64.)
"""
import argparse, gzip, hashlib, io, json, os, shutil, subprocess, tarfile

EPOCH = 1_700_000_000  # 2023-11-14: fixed, so the image never changes with the build date
REF = "kiln.local/busybox:latest"
HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "busybox-oci")  # replaced by --out


def entry(name, kind, mode, data=b"", link=""):
    ti = tarfile.TarInfo(name)
    ti.type, ti.mode, ti.mtime, ti.uid, ti.gid = kind, mode, EPOCH, 0, 0
    ti.uname = ti.gname = ""
    ti.linkname, ti.size = link, len(data)
    return ti, data


def layer(busybox, applets_from):
    applets = subprocess.run([applets_from, "--list-full"], check=True, capture_output=True,
                             text=True)
    binary = open(busybox, "rb").read()
    items = []
    for d, mode in [("bin", 0o755), ("dev", 0o755), ("etc", 0o755), ("home", 0o755),
                    ("proc", 0o755), ("root", 0o700), ("sbin", 0o755), ("sys", 0o755),
                    ("tmp", 0o1777), ("usr", 0o755), ("usr/bin", 0o755), ("usr/sbin", 0o755),
                    ("var", 0o755), ("var/tmp", 0o1777)]:
        items.append(entry(d + "/", tarfile.DIRTYPE, mode))
    items.append(entry("bin/busybox", tarfile.REGTYPE, 0o755, binary))
    for path in sorted(set(applets.stdout.split())):
        if path != "bin/busybox":
            items.append(entry(path, tarfile.SYMTYPE, 0o777, link="/bin/busybox"))
    files = {
        "etc/passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\nbuilder:x:1000:1000:builder:/home:/bin/sh\n",
        "etc/group": "root:x:0:\nnogroup:x:65534:\nbuilder:x:1000:\n",
        "etc/hostname": "busybox\n",
    }
    for name, text in files.items():
        items.append(entry(name, tarfile.REGTYPE, 0o644, text.encode()))
    items.sort(key=lambda it: it[0].name.rstrip("/"))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for ti, data in items:
            tar.addfile(ti, io.BytesIO(data) if ti.isreg() else None)
    return buf.getvalue()


def blob(data):
    digest = hashlib.sha256(data).hexdigest()
    path = os.path.join(OUT, "blobs", "sha256", digest)
    with open(path, "wb") as f:
        f.write(data)
    return {"digest": "sha256:" + digest, "size": len(data)}


def canonical(doc):
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--busybox", default="/bin/busybox")
    ap.add_argument("--out", default=OUT)
    ap.add_argument("--arch", default="amd64", choices=["amd64", "arm64"])
    ap.add_argument("--applets-from", default="/bin/busybox")
    args = ap.parse_args()
    busybox = args.busybox
    globals()["OUT"] = args.out
    shutil.rmtree(OUT, ignore_errors=True)
    os.makedirs(os.path.join(OUT, "blobs", "sha256"))
    tar = layer(busybox, args.applets_from)
    ref = REF if args.arch == "amd64" else "kiln.local/busybox-arm64:latest"
    gz = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=gz, mtime=0, compresslevel=9) as z:
        z.write(tar)
    layer_desc = blob(gz.getvalue())
    created = "2023-11-14T22:13:20Z"
    config = {
        "architecture": args.arch,
        "os": "linux",
        "created": created,
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                   "Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(tar).hexdigest()]},
        "history": [{"created": created,
                     "created_by": "testdata/base/build-busybox.py (Debian busybox-static)"}],
    }
    config_desc = blob(canonical(config))
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": dict(mediaType="application/vnd.oci.image.config.v1+json", **config_desc),
        "layers": [dict(mediaType="application/vnd.oci.image.layer.v1.tar+gzip", **layer_desc)],
    }
    manifest_desc = blob(canonical(manifest))
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [dict(mediaType="application/vnd.oci.image.manifest.v1+json",
                           annotations={"org.opencontainers.image.ref.name": ref},
                           platform={"architecture": args.arch, "os": "linux"}, **manifest_desc)],
    }
    with open(os.path.join(OUT, "index.json"), "wb") as f:
        f.write(canonical(index))
    with open(os.path.join(OUT, "oci-layout"), "wb") as f:
        f.write(canonical({"imageLayoutVersion": "1.0.0"}))
    print(f"{ref} {manifest_desc['digest']} ({layer_desc['size']} bytes compressed)")


if __name__ == "__main__":
    main()
