/**
 * Platforms: parsing "os/arch[/variant]", normalizing like containerd's `platforms` package, and choosing
 * one manifest of an index. Pure.
 */
import { InvalidArgumentError } from "../util/errors.ts";
import type { Descriptor, Platform } from "./types.ts";

/** Maps Node/Bun `process.arch` names to OCI architectures. */
const NODE_ARCH: Record<string, string> = {
  x64: "amd64",
  arm64: "arm64",
  arm: "arm",
  ia32: "386",
  ppc64: "ppc64le",
  s390x: "s390x",
  riscv64: "riscv64",
};

/** The OCI platform of a Node-style `arch` (as `process.arch` spells it), on linux. */
export function platformForArch(nodeArch: string, os = "linux"): Platform {
  const architecture = NODE_ARCH[nodeArch] ?? nodeArch;
  return architecture === "arm" ? { os, architecture, variant: "v7" } : { os, architecture };
}

/** Parses "linux/amd64", "linux/arm64/v8", "linux/arm/v7"; throws InvalidArgumentError otherwise. */
export function parsePlatform(s: string): Platform {
  const parts = s.split("/");
  if (parts.length < 2 || parts.length > 3 || parts.some((p) => !/^[a-z0-9._-]+$/i.test(p))) {
    throw new InvalidArgumentError(`Cannot parse platform "${s}": expected "os/arch[/variant]"`);
  }
  const p: Platform = { os: parts[0]!.toLowerCase(), architecture: parts[1]!.toLowerCase() };
  if (parts[2]) p.variant = parts[2].toLowerCase();
  return normalizePlatform(p);
}

/** "os/arch[/variant]". */
export function formatPlatform(p: Platform): string {
  return [p.os, p.architecture, p.variant].filter(Boolean).join("/");
}

/** containerd-style normalization: aarch64→arm64 (variant v8 dropped), x86_64→amd64, arm default v7. */
export function normalizePlatform(p: Platform): Platform {
  let arch = p.architecture;
  let variant = p.variant;
  if (arch === "aarch64" || arch === "arm64") {
    arch = "arm64";
    if (variant === "v8") variant = undefined;
  } else if (arch === "x86_64" || arch === "x86-64") arch = "amd64";
  else if (arch === "armhf") [arch, variant] = ["arm", "v7"];
  else if (arch === "armel") [arch, variant] = ["arm", "v6"];
  else if (arch === "arm" && !variant) variant = "v7";
  const out: Platform = { ...p, architecture: arch };
  if (variant) out.variant = variant;
  else delete out.variant;
  return out;
}

/** True when `candidate` satisfies `want` (same os and architecture; variant equal when `want` has one). */
export function platformMatches(want: Platform, candidate: Platform | undefined): boolean {
  if (!candidate) return false;
  const a = normalizePlatform(want);
  const b = normalizePlatform(candidate);
  if (a.os !== b.os || a.architecture !== b.architecture) return false;
  return !a.variant || a.variant === b.variant;
}

/**
 * The first manifest of an index for `want`; NotFound is the caller's to raise (returns undefined).
 * Attestation manifests (platform "unknown/unknown") never match.
 */
export function selectPlatform(manifests: Descriptor[], want: Platform): Descriptor | undefined {
  return manifests.find((d) => platformMatches(want, d.platform));
}
