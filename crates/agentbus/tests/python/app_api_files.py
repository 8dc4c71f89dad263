"""Drives the App API's file methods (/ws, JSON-RPC 2.0) with the
`websockets` package. One scenario per run; prints a JSON report as its
last line for the Rust test (tests/app_api_files.rs) to check.

    app_api_files.py <scenario> --url http://127.0.0.1:PORT --key KEY --base DIR [...]

The daemon's roots (set by the Rust test): docs = BASE/docs,
work = BASE/work, linked = BASE/linkroot (a symlink to BASE/docs),
gone = BASE/missing. BASE/outside is outside every root.
"""

import asyncio
import base64
import hashlib
import io
import json
import os
import stat
import tarfile
import time

import websockets

from app_api import Rpc, code, connect, run_scenarios


def result(answer):
    if "error" in answer:
        raise AssertionError("unexpected error: " + json.dumps(answer)[:500])
    return answer["result"]


def setup_tree(base):
    """docs: a.txt, bin.dat (not UTF-8), sub/b.txt, sub/deep/c.txt, links
    (one inside, two out), a FIFO; outside/secret.txt."""
    docs = os.path.join(base, "docs")
    outside = os.path.join(base, "outside")
    os.makedirs(os.path.join(docs, "sub", "deep"), exist_ok=True)
    os.makedirs(os.path.join(base, "work"), exist_ok=True)
    os.makedirs(outside, exist_ok=True)
    with open(os.path.join(outside, "secret.txt"), "w") as f:
        f.write("TOP SECRET")
    with open(os.path.join(docs, "a.txt"), "w") as f:
        f.write("hello, files\n")
    with open(os.path.join(docs, "bin.dat"), "wb") as f:
        f.write(bytes(range(256)))
    with open(os.path.join(docs, "sub", "b.txt"), "w") as f:
        f.write("b")
    with open(os.path.join(docs, "sub", "deep", "c.txt"), "w") as f:
        f.write("c" * 1000)
    os.symlink(os.path.join(outside, "secret.txt"), os.path.join(docs, "out_file"))
    os.symlink(outside, os.path.join(docs, "out_dir"))
    os.symlink("sub/b.txt", os.path.join(docs, "in_link"))
    os.mkfifo(os.path.join(docs, "pipe"))
    link_root = os.path.join(base, "linkroot")
    if not os.path.lexists(link_root):
        os.symlink(docs, link_root)
    return docs, outside


async def tour(args):
    """Every method's success path, and the errors each gives."""
    docs, outside = setup_tree(args.base)
    ws, rpc = await connect(args)
    r = {}

    # fileread: text, binary, forced encodings, ranges.
    a = result(await rpc.call("fileread", {"root": "docs", "path": "a.txt"}))
    r["read_text"] = a
    r["read_bin"] = result(await rpc.call("fileread", {"root": "docs", "path": "bin.dat"}))
    r["read_bin_ok"] = base64.b64decode(r["read_bin"]["data64"]) == bytes(range(256))
    r["read_forced64"] = result(await rpc.call("fileread", {"root": "docs", "path": "a.txt", "encoding": "base64"}))
    r["read_forced_utf8_bin"] = code(await rpc.call("fileread", {"root": "docs", "path": "bin.dat", "encoding": "utf8"}))
    r["read_range"] = result(await rpc.call("fileread", {"root": "docs", "path": "a.txt", "offset": 7, "length": 5}))
    r["read_abs"] = result(await rpc.call("fileread", {"path": os.path.join(docs, "sub", "b.txt")}))

    # filewrite / filecreate / fileappend.
    uni = "ünï/日本語 🦀.txt"
    result(await rpc.call("filemkdir", {"root": "docs", "path": "ünï"}))
    r["write"] = result(await rpc.call("filewrite", {"root": "docs", "path": uni, "data": "première\n", "mode": 0o600}))
    r["write_disk"] = open(os.path.join(docs, uni), encoding="utf-8").read()
    r["write_mode"] = stat.S_IMODE(os.stat(os.path.join(docs, uni)).st_mode)
    os.chmod(os.path.join(docs, uni), 0o640)
    r["overwrite"] = result(await rpc.call("filewrite", {"root": "docs", "path": uni, "data64": base64.b64encode(b"\x00\xffbin").decode()}))
    r["overwrite_disk_ok"] = open(os.path.join(docs, uni), "rb").read() == b"\x00\xffbin"
    r["overwrite_mode"] = stat.S_IMODE(os.stat(os.path.join(docs, uni)).st_mode)
    r["create"] = result(await rpc.call("filecreate", {"root": "docs", "path": "new.txt", "data": "fresh"}))
    r["create_again"] = code(await rpc.call("filecreate", {"root": "docs", "path": "new.txt", "data": "again"}))
    r["create_kept"] = open(os.path.join(docs, "new.txt")).read()
    r["append"] = result(await rpc.call("fileappend", {"root": "docs", "path": "new.txt", "data": "+more"}))
    r["append_disk"] = open(os.path.join(docs, "new.txt")).read()
    r["append_missing"] = code(await rpc.call("fileappend", {"root": "docs", "path": "nope.log", "data": "x"}))
    r["append_create"] = result(await rpc.call("fileappend", {"root": "docs", "path": "made.log", "data": "x", "create": True}))
    r["no_data"] = code(await rpc.call("filewrite", {"root": "docs", "path": "x"}))
    r["both_data"] = code(await rpc.call("filewrite", {"root": "docs", "path": "x", "data": "a", "data64": "YQ=="}))
    r["bad_base64"] = code(await rpc.call("filewrite", {"root": "docs", "path": "x", "data64": "!!!"}))
    r["bad_mode"] = code(await rpc.call("filewrite", {"root": "docs", "path": "x", "data": "a", "mode": 99999}))
    r["setuid_mode"] = code(await rpc.call("filewrite", {"root": "docs", "path": "x", "data": "a", "mode": 0o4755}))
    r["setgid_dir"] = code(await rpc.call("filemkdir", {"root": "docs", "path": "sg", "mode": 0o2755}))
    with open(os.path.join(docs, "suid.sh"), "w") as f:
        f.write("#!/bin/sh\n")
    os.chmod(os.path.join(docs, "suid.sh"), 0o4755)
    result(await rpc.call("filecopy", {"root": "docs", "path": "suid.sh", "to_path": "suid-copy.sh"}))
    r["copy_strips_setuid"] = stat.S_IMODE(os.stat(os.path.join(docs, "suid-copy.sh")).st_mode)
    result(await rpc.call("filewrite", {"root": "docs", "path": "suid.sh", "data": "#!/bin/sh\necho\n"}))
    r["overwrite_strips_setuid"] = stat.S_IMODE(os.stat(os.path.join(docs, "suid.sh")).st_mode)
    for n in ["suid.sh", "suid-copy.sh"]:
        os.unlink(os.path.join(docs, n))
    r["write_dir"] = code(await rpc.call("filewrite", {"root": "docs", "path": "sub", "data": "a"}))
    r["write_trailing_slash"] = code(await rpc.call("filewrite", {"root": "docs", "path": "t.txt/", "data": "a"}))
    r["write_through_file"] = code(await rpc.call("filewrite", {"root": "docs", "path": "a.txt/b", "data": "a"}))
    r["write_missing_dir"] = code(await rpc.call("filewrite", {"root": "docs", "path": "no/such/dir.txt", "data": "a"}))
    r["write_root_itself"] = code(await rpc.call("filewrite", {"root": "docs", "path": ".", "data": "a"}))
    r["leftover_temps"] = [n for n in os.listdir(docs) if n.startswith(".agentbus-tmp-")]

    # filemkdir.
    r["mkdir"] = result(await rpc.call("filemkdir", {"root": "docs", "path": "m1"}))
    r["mkdir_again"] = code(await rpc.call("filemkdir", {"root": "docs", "path": "m1"}))
    r["mkdir_no_parents"] = code(await rpc.call("filemkdir", {"root": "docs", "path": "p/q/r"}))
    r["mkdir_parents"] = result(await rpc.call("filemkdir", {"root": "docs", "path": "p/q/r", "parents": True}))
    r["mkdir_parents_again"] = result(await rpc.call("filemkdir", {"root": "docs", "path": "p/q/r", "parents": True}))
    r["mkdir_parents_isdir"] = os.path.isdir(os.path.join(docs, "p", "q", "r"))
    r["mkdir_parents_through_link"] = code(await rpc.call("filemkdir", {"root": "docs", "path": "out_dir/evil", "parents": True}))
    r["mkdir_through_link_made"] = os.path.exists(os.path.join(outside, "evil"))

    # filecopy / filemove, within a root and across roots.
    r["copy"] = result(await rpc.call("filecopy", {"root": "docs", "path": "a.txt", "to_path": "a-copy.txt"}))
    r["copy_disk"] = open(os.path.join(docs, "a-copy.txt")).read()
    r["copy_exists"] = code(await rpc.call("filecopy", {"root": "docs", "path": "a.txt", "to_path": "a-copy.txt"}))
    r["copy_overwrite"] = code(await rpc.call("filecopy", {"root": "docs", "path": "bin.dat", "to_path": "a-copy.txt", "overwrite": True}))
    r["copy_to_work"] = result(await rpc.call("filecopy", {"root": "docs", "path": "a.txt", "to_root": "work", "to_path": "from-docs.txt"}))
    r["copy_to_work_disk"] = open(os.path.join(args.base, "work", "from-docs.txt")).read()
    r["copy_dir"] = code(await rpc.call("filecopy", {"root": "docs", "path": "sub", "to_path": "sub2"}))
    r["copy_fifo"] = code(await rpc.call("filecopy", {"root": "docs", "path": "pipe", "to_path": "pipe2"}))
    r["copy_link"] = code(await rpc.call("filecopy", {"root": "docs", "path": "out_file", "to_path": "stolen.txt"}))
    r["copy_to_outside"] = code(await rpc.call("filecopy", {"root": "docs", "path": "a.txt", "to_path": os.path.join(outside, "x.txt")}))
    r["move"] = result(await rpc.call("filemove", {"root": "docs", "path": "a-copy.txt", "to_path": "sub/moved.txt"}))
    r["move_disk"] = os.path.exists(os.path.join(docs, "sub", "moved.txt")) and not os.path.exists(os.path.join(docs, "a-copy.txt"))
    r["move_exists"] = code(await rpc.call("filemove", {"root": "docs", "path": "new.txt", "to_path": "a.txt"}))
    r["move_dir"] = result(await rpc.call("filemove", {"root": "docs", "path": "m1", "to_path": "m2"}))
    r["move_into_itself"] = code(await rpc.call("filemove", {"root": "docs", "path": "p", "to_path": "p/q/r/p"}))
    r["move_to_work"] = result(await rpc.call("filemove", {"root": "docs", "path": "made.log", "to_root": "work", "to_path": "made.log"}))
    r["move_missing"] = code(await rpc.call("filemove", {"root": "docs", "path": "ghost", "to_path": "g2"}))

    # fileinfo.
    r["info_file"] = result(await rpc.call("fileinfo", {"root": "docs", "path": "a.txt"}))
    r["info_dir"] = result(await rpc.call("fileinfo", {"root": "docs", "path": "sub"}))
    r["info_root"] = result(await rpc.call("fileinfo", {"root": "docs", "path": "."}))
    r["info_link"] = result(await rpc.call("fileinfo", {"root": "docs", "path": "out_file"}))
    r["info_fifo"] = result(await rpc.call("fileinfo", {"root": "docs", "path": "pipe"}))
    r["info_missing"] = code(await rpc.call("fileinfo", {"root": "docs", "path": "ghost"}))
    r["info_file_as_dir"] = code(await rpc.call("fileinfo", {"root": "docs", "path": "a.txt/"}))

    # filelist: sorted, capped.
    r["list"] = result(await rpc.call("filelist", {"root": "docs"}))
    r["list_disk"] = sorted(os.listdir(docs), key=lambda n: n.encode())
    r["list_capped"] = result(await rpc.call("filelist", {"root": "docs", "path": ".", "max_entries": 3}))
    r["list_bad_cap"] = code(await rpc.call("filelist", {"root": "docs", "max_entries": 0}))
    r["list_file"] = code(await rpc.call("filelist", {"root": "docs", "path": "a.txt"}))

    # filejoin: pure.
    r["join"] = result(await rpc.call("filejoin", {"root": "docs", "parts": ["sub", "../sub/./deep/", "c.txt"]}))
    r["join_climb"] = code(await rpc.call("filejoin", {"root": "docs", "parts": ["sub", "../../etc"]}))
    r["join_abs"] = code(await rpc.call("filejoin", {"root": "docs", "parts": ["sub", "/etc"]}))
    r["join_ghost"] = result(await rpc.call("filejoin", {"root": "docs", "parts": ["no", "such", "file"]}))

    # filedelete.
    r["delete_file"] = result(await rpc.call("filedelete", {"root": "docs", "path": "new.txt"}))
    r["delete_link"] = result(await rpc.call("filedelete", {"root": "docs", "path": "out_file"}))
    r["delete_link_kept_target"] = os.path.exists(os.path.join(outside, "secret.txt"))
    r["delete_nonempty"] = code(await rpc.call("filedelete", {"root": "docs", "path": "p"}))
    r["delete_recursive"] = result(await rpc.call("filedelete", {"root": "docs", "path": "p", "recursive": True}))
    r["delete_empty_dir"] = result(await rpc.call("filedelete", {"root": "docs", "path": "m2"}))
    r["delete_missing"] = code(await rpc.call("filedelete", {"root": "docs", "path": "ghost"}))
    r["delete_root"] = code(await rpc.call("filedelete", {"root": "docs", "path": ".", "recursive": True}))
    r["docs_still_there"] = os.path.isdir(docs)

    # Trees deeper than 128 levels: refused, not recursed without end.
    os.makedirs(os.path.join(docs, "deep", *(["d"] * 130)))
    r["deep_delete"] = code(await rpc.call("filedelete", {"root": "docs", "path": "deep", "recursive": True}))
    r["deep_still_there"] = os.path.isdir(os.path.join(docs, "deep", *(["d"] * 130)))
    r["deep_tar"] = code(await rpc.call("filestreamtar", {"root": "docs", "path": "deep"}))
    rpc.notes.clear()
    import shutil
    shutil.rmtree(os.path.join(docs, "deep"))

    # Root choice.
    r["no_root"] = code(await rpc.call("fileread", {"path": "a.txt"}))
    r["unknown_root"] = code(await rpc.call("fileread", {"root": "nope", "path": "a.txt"}))
    r["missing_root_dir"] = code(await rpc.call("fileread", {"root": "gone", "path": "a.txt"}))

    # Params in the wrong shape: named errors, -32602.
    r["no_path"] = await rpc.call("fileread", {"root": "docs"})
    r["path_number"] = code(await rpc.call("fileread", {"root": "docs", "path": 5}))
    r["path_list"] = code(await rpc.call("fileread", {"root": "docs", "path": ["a.txt"]}))
    r["unknown_field"] = code(await rpc.call("fileread", {"root": "docs", "path": "a.txt", "follow": True}))
    r["smuggled_loc"] = code(await rpc.call("fileread", {"root": "docs", "path": "a.txt", "loc": {}}))
    r["positional"] = code(await rpc.call("fileread", ["docs", "a.txt"]))
    r["negative_offset"] = code(await rpc.call("fileread", {"root": "docs", "path": "a.txt", "offset": -1}))
    r["bad_encoding"] = code(await rpc.call("fileread", {"root": "docs", "path": "a.txt", "encoding": "latin1"}))
    r["stream_no_id"] = await rpc.raw(json.dumps({"jsonrpc": "2.0", "id": None, "method": "filereadstream", "params": {"root": "docs", "path": "a.txt"}}))
    r["agents_still_listed"] = code(await rpc.call("agent.list"))
    await ws.close()
    print(json.dumps(r))


async def paths(args):
    """Hostile paths: each refused cleanly, the daemon unharmed."""
    setup_tree(args.base)
    ws, rpc = await connect(args)
    r = {}
    cases = {
        "dotdot": "../outside/secret.txt",
        "dotdot_inner": "sub/../../outside/secret.txt",
        "dotdot_only": "..",
        "abs_outside": os.path.join(args.base, "outside", "secret.txt"),
        "abs_etc": "/etc/passwd",
        "abs_prefix_trick": os.path.join(args.base, "docsx", "a.txt"),
        "abs_dotdot": os.path.join(args.base, "docs", "..", "outside", "secret.txt"),
        "nul": "a.txt\u0000.png",
        "nul_only": "\u0000",
        "empty": "",
        "long": "a/" * 2100,
        "long_name": "x" * 300,
        "link_file": "out_file",
        "link_dir": "out_dir/secret.txt",
        "link_inside": "in_link",
        "fifo": "pipe",
        "through_file": "a.txt/b",
        "dir": "sub",
        "trailing_slash_file": "a.txt/",
        "unicode_missing": "\u202e\u200b\ufeff\U0001F600/x",
        "control": "a\nb\rc\x1b[31m",
        "dot": ".",
        "dot_slash": "./",
        "slashes": "//",
        "double_slash_inside": "sub//b.txt",
    }
    for name, path in cases.items():
        try:
            a = await rpc.call("fileread", {"root": "docs", "path": path}, timeout=10)
            r[name] = code(a)
            if "result" in a and "TOP SECRET" in json.dumps(a):
                r[name] = "LEAKED"
        except (TimeoutError, asyncio.TimeoutError):
            r[name] = "TIMEOUT"
        except Exception as e:  # a frame Python cannot even encode
            r[name] = "client:" + type(e).__name__
    # A lone surrogate (\udcff escaped) is not text: the frame is refused.
    frame = json.dumps({"jsonrpc": "2.0", "id": "sur", "method": "fileread", "params": {"root": "docs", "path": "\udcff"}})
    r["surrogate_like"] = code(await rpc.raw(frame))
    # The same class for every method that takes a path.
    r["methods"] = {}
    for method, extra in [
        ("fileinfo", {}), ("filelist", {}), ("fileliststream", {}), ("filereadstream", {}),
        ("filestreamtar", {}), ("filedelete", {}), ("filemkdir", {"parents": True}),
        ("filewrite", {"data": "x"}), ("filecreate", {"data": "x"}), ("fileappend", {"data": "x", "create": True}),
    ]:
        got = {}
        for name in ["dotdot", "abs_outside", "link_dir", "nul"]:
            got[name] = code(await rpc.call(method, dict({"root": "docs", "path": cases[name]}, **extra), timeout=10))
        r["methods"][method] = got
    for method in ["filecopy", "filemove"]:
        r["methods"][method] = {
            "from_out": code(await rpc.call(method, {"root": "docs", "path": "out_dir/secret.txt", "to_path": "x"})),
            "to_out": code(await rpc.call(method, {"root": "docs", "path": "a.txt", "to_path": "out_dir/x"})),
            "to_dotdot": code(await rpc.call(method, {"root": "docs", "path": "a.txt", "to_path": "../x"})),
        }
    # A symlink root, a FIFO that never blocks the daemon.
    r["linked_root"] = await rpc.call("fileread", {"root": "linked", "path": "a.txt"})
    t = time.monotonic()
    r["fifo_stream"] = code(await rpc.call("filereadstream", {"root": "docs", "path": "pipe"}, timeout=10))
    r["fifo_append"] = code(await rpc.call("fileappend", {"root": "docs", "path": "pipe", "data": "x"}, timeout=10))
    r["fifo_write"] = code(await rpc.call("filewrite", {"root": "docs", "path": "pipe", "data": "x"}, timeout=10))
    r["fifo_secs"] = time.monotonic() - t
    r["outside_untouched"] = sorted(os.listdir(os.path.join(args.base, "outside")))
    r["still_serving"] = code(await rpc.call("fileread", {"root": "docs", "path": "a.txt"}))
    await ws.close()
    print(json.dumps(r))


async def caps(args):
    """Over the read and write caps (the Rust test sets them small)."""
    docs = os.path.join(args.base, "docs")
    os.makedirs(docs, exist_ok=True)
    with open(os.path.join(docs, "big.bin"), "wb") as f:
        f.write(b"x" * 5000)
    ws, rpc = await connect(args)
    r = {}
    r["read_big"] = (await rpc.call("fileread", {"root": "docs", "path": "big.bin"}))["error"]
    r["read_piece"] = result(await rpc.call("fileread", {"root": "docs", "path": "big.bin", "offset": 4000, "length": 1000}))["length"]
    r["write_big"] = (await rpc.call("filewrite", {"root": "docs", "path": "w.bin", "data": "y" * 3000}))["error"]
    r["append_big"] = code(await rpc.call("fileappend", {"root": "docs", "path": "big.bin", "data": "y" * 3000}))
    r["copy_big"] = code(await rpc.call("filecopy", {"root": "docs", "path": "big.bin", "to_path": "c.bin"}))
    r["write_small"] = code(await rpc.call("filewrite", {"root": "docs", "path": "w.bin", "data": "y" * 2000}))
    # The stream has no cap.
    n, got = 0, bytearray()
    s = await rpc.call("filereadstream", {"root": "docs", "path": "big.bin", "chunk_bytes": 1024})
    for note in rpc.notes:
        if note.get("method") == "stream":
            got += base64.b64decode(note["params"]["data"]["data64"])
            n += 1
    r["stream"] = s.get("result")
    r["stream_bytes"] = len(got)
    r["list_capped"] = None
    for i in range(8):
        open(os.path.join(docs, "f%d" % i), "w").close()
    r["list_capped"] = result(await rpc.call("filelist", {"root": "docs"}))
    r["list_over"] = code(await rpc.call("filelist", {"root": "docs", "max_entries": 6}))
    await ws.close()
    print(json.dumps(r))


async def xdev(args):
    """docs and shm are on different filesystems (the Rust test checks)."""
    docs = os.path.join(args.base, "docs")
    os.makedirs(docs, exist_ok=True)
    with open(os.path.join(docs, "a.txt"), "w") as f:
        f.write("across")
    ws, rpc = await connect(args)
    r = {}
    r["move"] = await rpc.call("filemove", {"root": "docs", "path": "a.txt", "to_root": "shm", "to_path": "a.txt"})
    r["still_in_docs"] = os.path.exists(os.path.join(docs, "a.txt"))
    r["copy"] = code(await rpc.call("filecopy", {"root": "docs", "path": "a.txt", "to_root": "shm", "to_path": "a.txt"}))
    r["delete"] = code(await rpc.call("filedelete", {"root": "docs", "path": "a.txt"}))
    r["read_copy"] = result(await rpc.call("fileread", {"root": "shm", "path": "a.txt"}))["data"]
    await ws.close()
    print(json.dumps(r))


async def busy(args):
    """Streams that nobody reads hold their permits: past the daemon's
    limit a new stream is BUSY, and once they end it runs again."""
    docs = os.path.join(args.base, "docs")
    os.makedirs(docs, exist_ok=True)
    with open(os.path.join(docs, "sparse.bin"), "wb") as f:
        f.truncate(1 << 30)
    url = args.url.replace("http://", "ws://", 1) + "/ws"
    headers = {"Authorization": "Bearer " + args.key}
    stalled = []
    for c in range(args.count):
        ws = await websockets.connect(url, additional_headers=headers, max_size=None, max_queue=1, close_timeout=0.5)
        for i in range(32):
            await ws.send(json.dumps({"jsonrpc": "2.0", "id": i, "method": "filereadstream",
                                      "params": {"root": "docs", "path": "sparse.bin"}}))
        stalled.append(ws)
    r = {}
    await asyncio.sleep(0.5)
    r["stalled_at_start"] = [s.state.name for s in stalled]
    ws, rpc = await connect(args)
    # Give the stalled streams time to start and fill their queues.
    seen = {}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        a = await rpc.call("filereadstream", {"root": "docs", "path": "sparse.bin", "length": 10})
        seen[code(a)] = seen.get(code(a), 0) + 1
        if code(a) == "BUSY":
            break
        await asyncio.sleep(0.1)
    r["over"] = a.get("error")
    r["probes"] = seen
    r["stalled_open"] = [[s.state.name, s.close_code, s.close_reason] for s in stalled]
    r["plain_read"] = code(await rpc.call("fileread", {"root": "docs", "path": "sparse.bin", "length": 10}))
    for s in stalled:
        await s.close()
    for _ in range(100):
        a = await rpc.call("filereadstream", {"root": "docs", "path": "sparse.bin", "length": 10})
        if code(a) != "BUSY":
            break
        await asyncio.sleep(0.1)
    r["after"] = code(a)
    await ws.close()
    print(json.dumps(r))


async def disabled(args):
    """No roots configured: every file method says how to set them."""
    ws, rpc = await connect(args)
    r = {}
    params = {
        "fileread": {"path": "a"}, "filewrite": {"path": "a", "data": "x"}, "filecreate": {"path": "a", "data": "x"},
        "filedelete": {"path": "a"}, "fileappend": {"path": "a", "data": "x"}, "filecopy": {"path": "a", "to_path": "b"},
        "filemove": {"path": "a", "to_path": "b"}, "filemkdir": {"path": "a"}, "filelist": {}, "fileliststream": {},
        "filereadstream": {"path": "a"}, "filestreamtar": {}, "fileinfo": {"path": "a"}, "filejoin": {"parts": ["a"]},
    }
    for m, p in params.items():
        a = await rpc.call(m, p)
        r[m] = [code(a), a.get("error", {}).get("message", "")]
    await ws.close()
    print(json.dumps(r))


async def scoped(args):
    """An agent token: with default scopes every file method is refused;
    with `fileread@root:docs` (args.extra) only that."""
    setup_tree(args.base)
    r = {}
    params = {
        "fileread": {"root": "docs", "path": "a.txt"}, "filewrite": {"root": "docs", "path": "a.txt", "data": "x"},
        "filecreate": {"root": "docs", "path": "z", "data": "x"}, "filedelete": {"root": "docs", "path": "a.txt"},
        "fileappend": {"root": "docs", "path": "a.txt", "data": "x"},
        "filecopy": {"root": "docs", "path": "a.txt", "to_path": "b"},
        "filemove": {"root": "docs", "path": "a.txt", "to_path": "b"}, "filemkdir": {"root": "docs", "path": "d"},
        "filelist": {"root": "docs"}, "fileliststream": {"root": "docs"},
        "filereadstream": {"root": "docs", "path": "a.txt"}, "filestreamtar": {"root": "docs"},
        "fileinfo": {"root": "docs", "path": "a.txt"}, "filejoin": {"root": "docs", "parts": ["a"]},
    }
    ws, rpc = await connect(args, args.token)
    r["default"] = {m: code(await rpc.call(m, p)) for m, p in params.items()}
    await ws.close()
    ws, rpc = await connect(args, args.extra)
    r["read_docs"] = code(await rpc.call("fileread", {"root": "docs", "path": "a.txt"}))
    r["read_docs_abs"] = code(await rpc.call("fileread", {"path": os.path.join(args.base, "docs", "a.txt")}))
    r["read_work"] = code(await rpc.call("fileread", {"root": "work", "path": "x"}))
    r["read_no_root"] = code(await rpc.call("fileread", {"path": "a.txt"}))
    r["write_docs"] = code(await rpc.call("filewrite", {"root": "docs", "path": "a.txt", "data": "x"}))
    r["forbidden_message"] = (await rpc.call("filewrite", {"root": "docs", "path": "a.txt", "data": "x"}))["error"]["message"]
    r["a_unchanged"] = open(os.path.join(args.base, "docs", "a.txt")).read()
    await ws.close()
    print(json.dumps(r))


def tree_of(top):
    """Every entry beneath top: path -> (kind, content or link target)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            rel = os.path.relpath(p, top)
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ["symlink", os.readlink(p)]
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ["dir", None]
            elif stat.S_ISREG(st.st_mode):
                out[rel] = ["file", hashlib.sha256(open(p, "rb").read()).hexdigest()]
            else:
                out[rel] = ["other", None]
    return out


async def collect(rpc, method, params, timeout=60):
    """Runs a stream; its notifications' data in order, and the answer."""
    answer = await rpc.call(method, params, timeout=timeout)
    rid = answer["id"]
    notes = [n for n in rpc.notes if n.get("method") == "stream" and n["params"]["id"] == rid]
    rpc.notes = [n for n in rpc.notes if n not in notes]
    return answer, notes


async def streams(args):
    docs, _ = setup_tree(args.base)
    big = os.urandom(300_000)
    with open(os.path.join(docs, "sub", "big.bin"), "wb") as f:
        f.write(big)
    for i in range(700):
        open(os.path.join(docs, "sub", "deep", "n%04d" % i), "w").close()
    os.makedirs(os.path.join(docs, "sub", "empty"))
    os.symlink("../b.txt", os.path.join(docs, "sub", "deep", "up_link"))
    ws, rpc = await connect(args)
    r = {}
    # filereadstream == the file.
    answer, notes = await collect(rpc, "filereadstream", {"root": "docs", "path": "sub/big.bin", "chunk_bytes": 40000})
    got = b"".join(base64.b64decode(n["params"]["data"]["data64"]) for n in notes)
    r["read_equal"] = got == big
    r["read_seqs"] = [n["params"]["seq"] for n in notes]
    r["read_offsets_ok"] = all(n["params"]["data"]["offset"] == i * 40000 for i, n in enumerate(notes))
    r["read_answer"] = answer["result"]
    r["read_sha_ok"] = answer["result"]["sha256"] == hashlib.sha256(big).hexdigest()
    answer, notes = await collect(rpc, "filereadstream", {"root": "docs", "path": "sub/big.bin", "offset": 1000, "length": 5000})
    r["read_range_ok"] = b"".join(base64.b64decode(n["params"]["data"]["data64"]) for n in notes) == big[1000:6000]
    r["read_bad_chunk"] = code(await rpc.call("filereadstream", {"root": "docs", "path": "a.txt", "chunk_bytes": 10**9}))
    # fileliststream == filelist == the directory.
    answer, notes = await collect(rpc, "fileliststream", {"root": "docs", "path": "sub/deep", "batch": 100})
    streamed = [e for n in notes for e in n["params"]["data"]["entries"]]
    listed = result(await rpc.call("filelist", {"root": "docs", "path": "sub/deep"}))
    key = lambda e: e["name"]
    r["list_batches"] = [len(n["params"]["data"]["entries"]) for n in notes]
    r["list_equal"] = sorted(streamed, key=key) == sorted(listed["entries"], key=key)
    r["list_names_equal"] = sorted(e["name"] for e in streamed) == sorted(os.listdir(os.path.join(docs, "sub", "deep")))
    r["list_answer"] = answer["result"]
    r["list_link_type"] = [e["type"] for e in streamed if e["name"] == "up_link"]
    # filestreamtar unpacks to the same tree (symlinks as symlinks; the
    # FIFO left out and named).
    answer, notes = await collect(rpc, "filestreamtar", {"root": "docs", "chunk_bytes": 65536}, timeout=120)
    data = b"".join(base64.b64decode(n["params"]["data"]["data64"]) for n in notes)
    r["tar_answer"] = answer.get("result", answer.get("error"))
    r["tar_bytes_ok"] = len(data) == answer["result"]["bytes"]
    r["tar_sha_ok"] = hashlib.sha256(data).hexdigest() == answer["result"]["sha256"]
    out = os.path.join(args.base, "unpacked")
    with tarfile.open(fileobj=io.BytesIO(data)) as t:
        r["tar_link_members"] = sorted(m.name for m in t.getmembers() if m.issym())
        t.extractall(out, filter="fully_trusted")
    want = tree_of(docs)
    want.pop("pipe")
    got_tree = tree_of(out)
    r["tar_tree_equal"] = want == got_tree
    r["tar_tree_diff"] = sorted(k for k in set(want) | set(got_tree) if want.get(k) != got_tree.get(k))
    # A tar of one subdirectory is named from it down; of one file, that file.
    answer, notes = await collect(rpc, "filestreamtar", {"root": "docs", "path": "sub/deep"})
    data = b"".join(base64.b64decode(n["params"]["data"]["data64"]) for n in notes)
    with tarfile.open(fileobj=io.BytesIO(data)) as t:
        names = t.getnames()
    r["tar_sub_top"] = sorted({n.split("/")[0] for n in names})
    r["tar_sub_count"] = len(names)
    answer, notes = await collect(rpc, "filestreamtar", {"root": "docs", "path": "a.txt"})
    data = b"".join(base64.b64decode(n["params"]["data"]["data64"]) for n in notes)
    with tarfile.open(fileobj=io.BytesIO(data)) as t:
        r["tar_file"] = [t.getnames(), t.extractfile("a.txt").read().decode()]
    r["tar_missing"] = code(await rpc.call("filestreamtar", {"root": "docs", "path": "ghost"}))
    r["tar_through_link"] = code(await rpc.call("filestreamtar", {"root": "docs", "path": "out_dir/secret.txt"}))
    # A tar of a symlink is that symlink, not what it points to.
    answer, notes = await collect(rpc, "filestreamtar", {"root": "docs", "path": "out_dir"})
    data = b"".join(base64.b64decode(n["params"]["data"]["data64"]) for n in notes)
    with tarfile.open(fileobj=io.BytesIO(data)) as t:
        r["tar_link"] = [[m.name, m.issym(), m.linkname.endswith("outside")] for m in t.getmembers()]
    await ws.close()
    print(json.dumps(r))


async def race(args):
    """Reads docs/sub/f.txt again and again while the Rust test swaps
    `sub` for a symlink to outside (same name, same file name inside)."""
    ws, rpc = await connect(args)
    r = {"inside": 0, "leaked": 0, "errors": {}}
    deadline = time.monotonic() + args.secs
    n = 0
    methods = ["fileread", "fileinfo", "filereadstream", "filelist"]
    while n < args.count or time.monotonic() < deadline:
        # Pipelined: many calls in flight at once.
        calls = []
        for i in range(16):
            m = methods[(n + i) % len(methods)] if args.all_methods else "fileread"
            p = {"root": "docs", "path": "sub/f.txt" if m != "filelist" else "sub"}
            calls.append(rpc.call(m, p))
        for a in await asyncio.gather(*calls):
            n += 1
            text = json.dumps(a)
            leaked_size = a.get("result", {}).get("size") == len("OUTSIDE SECRET!!")
            if "OUTSIDE" in text or "T1VUU0lERQ" in text or "marker_outside" in text or leaked_size:
                r["leaked"] += 1
            elif "error" in a:
                c = code(a)
                r["errors"][c] = r["errors"].get(c, 0) + 1
            else:
                r["inside"] += 1
        for note in rpc.notes:
            t = json.dumps(note)
            if "OUTSIDE" in t or "T1VUU0lERQ" in t:
                r["leaked"] += 1
        rpc.notes.clear()
    r["calls"] = n
    await ws.close()
    print(json.dumps(r))


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def slow(args):
    """A 200 MB sparse file streamed to a reader that reads slowly at
    first: the daemon's RSS stays bounded (the producer waits), then the
    whole file arrives."""
    docs = os.path.join(args.base, "docs")
    os.makedirs(docs, exist_ok=True)
    size = args.size
    with open(os.path.join(docs, "sparse.bin"), "wb") as f:
        f.truncate(size)
    headers = {"Authorization": "Bearer " + args.key}
    # A small receive queue on our side too, so slowness reaches the daemon.
    ws = await websockets.connect(args.url.replace("http://", "ws://", 1) + "/ws",
                                  additional_headers=headers, max_size=None, max_queue=4,
                                  close_timeout=1)
    r = {"rss_before_kb": rss_kb(args.pid)}
    await ws.send(json.dumps({"jsonrpc": "2.0", "id": "big", "method": "filereadstream",
                              "params": {"root": "docs", "path": "sparse.bin"}}))
    peak = r["rss_before_kb"]
    got = 0
    chunks = 0
    sha = hashlib.sha256()
    answer = None
    slow_until = time.monotonic() + args.secs
    while True:
        raw = await asyncio.wait_for(ws.recv(), 120)
        msg = json.loads(raw)
        if msg.get("id") == "big":
            answer = msg
            break
        data = base64.b64decode(msg["params"]["data"]["data64"])
        sha.update(data)
        got += len(data)
        chunks += 1
        if time.monotonic() < slow_until:
            await asyncio.sleep(0.05)
            peak = max(peak, rss_kb(args.pid))
        elif chunks % 200 == 0:
            peak = max(peak, rss_kb(args.pid))
    r["rss_peak_kb"] = max(peak, rss_kb(args.pid))
    r["received"] = got
    r["chunks"] = chunks
    r["answer"] = answer.get("result", answer.get("error"))
    r["sha_ok"] = answer["result"]["sha256"] == sha.hexdigest()
    zeros = hashlib.sha256()
    block = bytes(1 << 20)
    for _ in range(size // len(block)):
        zeros.update(block)
    zeros.update(bytes(size % len(block)))
    r["content_ok"] = sha.hexdigest() == zeros.hexdigest()
    # A reader that stops reading and leaves: the stream ends, the
    # daemon goes on.
    await ws.send(json.dumps({"jsonrpc": "2.0", "id": "again", "method": "filereadstream",
                              "params": {"root": "docs", "path": "sparse.bin"}}))
    await asyncio.sleep(1.0)
    r["rss_stalled_kb"] = rss_kb(args.pid)
    await ws.close()
    print(json.dumps(r))


if __name__ == "__main__":
    run_scenarios(
        {name: f for name, f in globals().items()
         if asyncio.iscoroutinefunction(f) and not name.startswith("_")},
        ("--base", {"required": True}), ("--pid", {"type": int}),
        ("--count", {"type": int, "default": 3000}), ("--secs", {"type": float, "default": 3.0}),
        ("--size", {"type": int, "default": 200 * 1024 * 1024}),
        ("--all-methods", {"action": "store_true"}),
    )
