import type { Attempt } from "./types.ts"
import { round } from "./view.ts"

const where = (a: Attempt) => (a.reservation === undefined ? "unreserved" : `in reservation ${a.reservation.text}`)

/** Scalars: cpus, mem, gpus and scratch disk must be left in the chosen pool. */
export const check = (a: Attempt): string | undefined => {
  const amounts = a.pool.amounts
  const req = a.req
  const cpus = amounts.get("cpus") ?? 0
  if (cpus + 0.0005 < req.cpus) return `needs cpus:${req.cpus}, the offer has ${round(cpus)} ${where(a)}`
  const mem = amounts.get("mem") ?? 0
  if (mem + 0.0005 < req.mem) return `needs mem:${req.mem}, the offer has ${round(mem)} ${where(a)}`
  if (req.gpus > 0) {
    const gpus = amounts.get("gpus") ?? 0
    if (gpus + 0.0005 < req.gpus) return `needs gpus:${req.gpus}, the offer has ${round(gpus)} ${where(a)}`
  }
  if (req.disk > 0) {
    const disk = amounts.get("disk") ?? 0
    if (disk + 0.0005 < req.disk) return `needs disk:${req.disk}, the offer has ${round(disk)} ${where(a)}`
  }
  return undefined
}
