import { Resources, type v1 } from "@berth/proto"
import * as fs from "node:fs"
import * as os from "node:os"

const MB = 1024 * 1024

/**
 * What this machine can offer, as Mesos agents estimate it: all cpus; memory less 1 GB kept for
 * the system (or half, on small machines); the work dir's free disk less 5 GB (or half); ports
 * 31000-32000. Anything named in `declared` replaces the detected value.
 */
export const resources = (workDir: string, declared: ReadonlyArray<v1.Resource>): Array<v1.Resource> => {
  const totalMem = Math.floor(os.totalmem() / MB)
  const mem = totalMem - Math.min(1024, Math.floor(totalMem / 2))
  fs.mkdirSync(workDir, { recursive: true })
  const stats = fs.statfsSync(workDir)
  const freeDisk = Math.floor((stats.bavail * stats.bsize) / MB)
  const disk = freeDisk - Math.min(5 * 1024, Math.floor(freeDisk / 2))
  const detected = [
    Resources.scalar("cpus", os.availableParallelism()),
    Resources.scalar("mem", mem),
    Resources.scalar("disk", disk),
    Resources.ranges("ports", [[31000, 32000]])
  ]
  const names = new Set(declared.map((r) => r.name))
  return Resources.normalize([...detected.filter((r) => !names.has(r.name)), ...declared])
}

/** Why an attribute text could not be parsed. */
export class AttributeParseError extends Error {
  override readonly name = "AttributeParseError"
}

/** Parses `rack:r1;zone:z1;weight:3`: numbers become scalar attributes, the rest text. */
export const attributes = (text: string): Array<v1.Attribute> =>
  text
    .split(";")
    .map((part) => part.trim())
    .filter((part) => part.length > 0)
    .map((part) => {
      const colon = part.indexOf(":")
      const name = colon < 0 ? "" : part.slice(0, colon).trim()
      const value = colon < 0 ? "" : part.slice(colon + 1).trim()
      if (!/^[A-Za-z][A-Za-z0-9_.-]*$/.test(name) || value === "") {
        throw new AttributeParseError(`"${part}": expected name:value with a name matching [A-Za-z][A-Za-z0-9_.-]*`)
      }
      const number = Number(value)
      return Number.isFinite(number) && /^-?\d+(\.\d+)?$/.test(value)
        ? { name, value: { $case: "scalar" as const, value: number } }
        : { name, value: { $case: "text" as const, value } }
    })
