import type { Attempt } from "./types.ts"
import { round } from "./view.ts"

const where = (a: Attempt) => (a.reservation === undefined ? "unreserved" : `in reservation ${a.reservation.text}`)

/**
 * Scalars: cpus, mem, gpus and scratch disk must be left in the chosen pool (with what is
 * reserved beyond the launch, when the reservation is made here).
 */
export const check = (a: Attempt): string | undefined => {
  const amounts = a.pool.amounts
  const req = a.req
  const extra = a.reserve ? req.extra : NONE
  const need = (n: number, x: number) => round(n + x)
  const cpus = amounts.get("cpus") ?? 0
  if (cpus + 0.0005 < need(req.cpus, extra.cpus)) return `needs cpus:${need(req.cpus, extra.cpus)}, the offer has ${round(cpus)} ${where(a)}`
  const mem = amounts.get("mem") ?? 0
  if (mem + 0.0005 < need(req.mem, extra.mem)) return `needs mem:${need(req.mem, extra.mem)}, the offer has ${round(mem)} ${where(a)}`
  if (req.gpus + extra.gpus > 0) {
    const gpus = amounts.get("gpus") ?? 0
    if (gpus + 0.0005 < req.gpus + extra.gpus) return `needs gpus:${req.gpus + extra.gpus}, the offer has ${round(gpus)} ${where(a)}`
  }
  if (req.disk + extra.disk > 0) {
    const disk = amounts.get("disk") ?? 0
    if (disk + 0.0005 < need(req.disk, extra.disk)) return `needs disk:${need(req.disk, extra.disk)}, the offer has ${round(disk)} ${where(a)}`
  }
  return undefined
}

const NONE = { cpus: 0, mem: 0, disk: 0, gpus: 0 }
