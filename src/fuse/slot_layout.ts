/**
 * The request hand-off between a reader thread (reader_worker.ts) and the main thread (dev_transport.ts), per
 * reader: one SharedArrayBuffer with a control block and SLOTS request slots of the transport's read-buffer size.
 *
 * Rank 1, pure: constants only. Byte layout (Int32 words, little-endian):
 *   0  HEAD  requests the reader has published (wraps at 2^32; the slot is HEAD mod SLOTS)
 *   4  TAIL  requests the main thread has taken out of their slots
 *   8  PAUSE  set by the main thread: 1 read no more requests (the reader parks once it is not in read(2)),
 *             2 leave (the reader's loop ends)
 *   12 PAUSED set by the reader while parked: it will read nothing until PAUSE is cleared
 *   16 LEN[SLOTS]  length of the request in each slot
 * then, at CTL_BYTES, the slots. The reader waits (Atomics.wait) while all slots are full, reads into the
 * next slot, stores its length, bumps HEAD and notifies; the main thread sleeps in Atomics.waitAsync on
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
  /** Word index of PAUSE (main thread → reader). */
  PAUSE: 2,
  /** Word index of PAUSED (reader → main thread). */
  PAUSED: 3,
  /** Word index of LEN[0]. */
  LEN: 4,
  /** Bytes before the first slot. */
  CTL_BYTES: 64,
} as const;
