/**
 * The request hand-off between a reader thread (reader_worker.ts) and the main thread (reader_pool.ts), per
 * reader thread: one SharedArrayBuffer with a control block and SLOTS request slots of the pool's slot size.
 * A thread reads the /dev/fuse fds of many connections (every mount of the process, reader_pool.ts), so each
 * slot also says which fd its request came from, by the key the main thread gave that fd.
 *
 * Rank 1, pure: constants only. Byte layout (Int32 words, little-endian):
 *   0  HEAD  requests the reader has published (wraps at 2^32; the slot is HEAD mod SLOTS)
 *   4  TAIL  requests the main thread has taken out of their slots
 *   8  CONTROL  bumped by the main thread after it posts control messages (add, pause, drop, stop an fd) to the
 *              thread's port: the reader drains its port when the word differs from what it last saw
 *   12 SPARE  never written: the reader sleeps on it (Atomics.wait with a timeout) while a message is on its way
 *   16 LEN[SLOTS]  length of the request in each slot
 *   16 + 4·SLOTS KEY[SLOTS]  key of the fd each slot's request was read from (never reused within a process, so a
 *              request left in a slot by a connection that has ended is never served by a newer one on the same fd
 *              number)
 * then, at CTL_BYTES, the slots. The reader waits (Atomics.wait) while all slots are full, reads into the
 * next slot, stores its length and key, bumps HEAD and notifies; the main thread sleeps in Atomics.waitAsync on
 * HEAD, copies each new request out of its slot (a READ request is 80 bytes), bumps TAIL, notifies, and
 * serves it. A READ the reader answers itself (direct_reads.ts) never takes a slot. Measured here (ping-pong
 * microbenchmark, 2026-11-24): 11-17 µs median per hand-off, against 16-113 µs for postMessage of a transferred
 * buffer (a MessageEvent and a structured clone per request).
 */
export const SLOT_LAYOUT = {
  /** Request slots per reader. */
  SLOTS: 4,
  /** Word index of HEAD. */
  HEAD: 0,
  /** Word index of TAIL. */
  TAIL: 1,
  /** Word index of CONTROL (main thread → reader: control messages are waiting in the port). */
  CONTROL: 2,
  /** Word index of SPARE (never written; a word to sleep on). */
  SPARE: 3,
  /** Word index of LEN[0]. */
  LEN: 4,
  /** Word index of KEY[0]. */
  KEY: 8,
  /** Bytes before the first slot. */
  CTL_BYTES: 64,
} as const;
