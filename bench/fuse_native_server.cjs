/**
 * The libfuse baseline for bench/fuse.ts: the same tree as test/fuse/fixtures/trees.ts `benchTree`
 * (a big file, a directory of small files, a directory tree for find), served from memory by the npm
 * `fuse-native` addon (libfuse 2) under Node. It crashes under Bun, hence Node and CommonJS.
 * Usage: node fuse_native_server.cjs <mountpoint> <bigBytes> <lsEntries> <findFiles>; prints "ready";
 * SIGTERM unmounts and exits.
 */
"use strict";
const Fuse = require("fuse-native");
const crypto = require("node:crypto");

const [mp, bigBytes, lsEntries, findFiles] = [process.argv[2], +process.argv[3], +process.argv[4], +process.argv[5]];
const now = new Date(1_700_000_000_000);
const nodes = new Map();
function dir(path) {
  if (!nodes.has(path)) {
    nodes.set(path, { dir: true, children: [] });
    if (path !== "/") {
      const parent = path.slice(0, path.lastIndexOf("/")) || "/";
      dir(parent).children.push(path.slice(path.lastIndexOf("/") + 1));
    }
  }
  return nodes.get(path);
}
function file(path, data) {
  const parent = path.slice(0, path.lastIndexOf("/")) || "/";
  dir(parent).children.push(path.slice(path.lastIndexOf("/") + 1));
  nodes.set(path, { dir: false, data });
}
dir("/");
const big = Buffer.alloc(bigBytes);
const chunk = crypto.randomBytes(1 << 20);
for (let off = 0; off < bigBytes; off += chunk.length) chunk.copy(big, off, 0, Math.min(chunk.length, bigBytes - off));
file("/big", big);
const small = Buffer.alloc(100, "x");
for (let i = 0; i < lsEntries; i++) file(`/ls/e${String(i).padStart(5, "0")}`, small);
for (let i = 0; i < findFiles; i++) {
  dir(`/find/d${Math.floor(i / 1000)}`);
  file(`/find/d${Math.floor(i / 1000)}/f${i}`, small);
}

const ops = {
  getattr(path, cb) {
    const n = nodes.get(path);
    if (!n) return cb(Fuse.ENOENT);
    cb(0, {
      mtime: now,
      atime: now,
      ctime: now,
      uid: 0,
      gid: 0,
      nlink: n.dir ? 2 : 1,
      size: n.dir ? 4096 : n.data.length,
      mode: n.dir ? 0o40755 : 0o100644,
    });
  },
  readdir(path, cb) {
    const n = nodes.get(path);
    if (!n?.dir) return cb(Fuse.ENOENT);
    cb(0, n.children);
  },
  open(_path, _flags, cb) {
    cb(0, 42);
  },
  release(_path, _fd, cb) {
    cb(0);
  },
  read(path, _fd, buf, len, pos, cb) {
    const n = nodes.get(path);
    if (!n || n.dir) return cb(Fuse.EIO);
    cb(n.data.copy(buf, 0, pos, Math.min(pos + len, n.data.length)));
  },
};

const fuse = new Fuse(mp, ops, { force: true, mkdir: false, allowOther: true });
fuse.mount((err) => {
  if (err) {
    console.error(`Cannot mount fuse-native at "${mp}": ${err.message}`);
    process.exit(1);
  }
  console.log("ready");
});
const stop = () => fuse.unmount(() => process.exit(0));
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
