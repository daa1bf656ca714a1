/**
 * Go's `time.Time.MarshalText` for a UTC instant: RFC 3339 with nanoseconds, trailing fractional zeros
 * trimmed ("2006-01-02T15:04:05.999999999Z07:00"). SOCI writes tar mtimes this way into `mod_time`, in the
 * local time zone of the machine that builds the index (Go's archive/tar gives local times): "Z" where that is
 * UTC, "2023-11-14T23:13:20.5+01:00" with TZ=Europe/Paris (measured with AWS SOCI 0.4.1). soci-ts always
 * writes UTC, so its zTOCs equal SOCI's built in UTC; readers take any offset (layerfs's parseModTime).
 */

/** Go's zero `time.Time` as MarshalText writes it. */
export const GO_ZERO_TIME = "0001-01-01T00:00:00Z";

/**
 * Formats `sec` seconds (may be negative) plus `nsec` nanoseconds since the Unix epoch. Years outside
 * [0, 9999] give "" because Go's MarshalText fails there and SOCI ignores the error (writing an empty string).
 */
export function formatGoTime(sec: number, nsec = 0): string {
  const ms = sec * 1000;
  if (!Number.isFinite(ms) || Math.abs(ms) > 8.64e15) return "";
  const d = new Date(ms);
  const year = d.getUTCFullYear();
  if (year < 0 || year > 9999) return "";
  const p2 = (n: number) => String(n).padStart(2, "0");
  let s = `${String(year).padStart(4, "0")}-${p2(d.getUTCMonth() + 1)}-${p2(d.getUTCDate())}T${p2(d.getUTCHours())}:${p2(d.getUTCMinutes())}:${p2(d.getUTCSeconds())}`;
  if (nsec > 0) s += `.${String(nsec).padStart(9, "0").replace(/0+$/, "")}`;
  return `${s}Z`;
}

/** Parses what `formatGoTime` writes back into seconds and nanoseconds, or undefined. */
export function parseGoTime(text: string): { sec: number; nsec: number } | undefined {
  const m = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?Z$/.exec(text);
  if (!m) return undefined;
  const d = new Date(0);
  d.setUTCFullYear(Number(m[1]), Number(m[2]) - 1, Number(m[3]));
  d.setUTCHours(Number(m[4]), Number(m[5]), Number(m[6]), 0);
  return { sec: Math.floor(d.getTime() / 1000), nsec: Number((m[7] ?? "").padEnd(9, "0")) };
}
