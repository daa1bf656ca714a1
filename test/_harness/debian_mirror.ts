/** The Debian mirror this machine's apt uses, for fixtures fetched from Debian (debootstrap, `apt-get download`). */
import { readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";

/**
 * The first ".../debian" URI of /etc/apt/sources.list.d/* (deb822 `URIs:` or one-line `deb`) or
 * /etc/apt/sources.list; "http://deb.debian.org/debian" when none is found.
 */
export function debianMirror(): string {
  const dir = "/etc/apt/sources.list.d";
  const texts: string[] = [];
  try {
    for (const f of readdirSync(dir)) texts.push(readFileSync(join(dir, f), "utf8"));
  } catch {
    // no sources.list.d
  }
  try {
    texts.push(readFileSync("/etc/apt/sources.list", "utf8"));
  } catch {
    // none
  }
  for (const t of texts) {
    const m = /^URIs:\s*(\S+\/debian)\s*$/m.exec(t) ?? /^deb\s+(?:\[[^\]]*\]\s+)?(\S+\/debian)\s+/m.exec(t);
    if (m) return m[1]!;
  }
  return "http://deb.debian.org/debian";
}
