import type { Attempt } from "./types.ts"
import type { Pool } from "./view.ts"

/**
 * Volumes: one with a persistence id the offer carries is reused (and an `existing` one must be
 * there); a new one needs a single disk entry of its size in the chosen pool, after the
 * requirement's scratch disk. MOUNT disks are not split, so they are never used for new volumes.
 */
export const check = (a: Attempt): string | undefined => {
  const volumes = a.req.volumes
  if (volumes.length === 0) return undefined
  let free: Array<number> | undefined
  for (const v of volumes) {
    if (a.view.volumes.has(v.persistenceId)) continue
    if (v.existing === true) return `volume "${v.persistenceId}" is not offered by agent ${a.view.offer.agentId}`
    free ??= diskLeft(a.pool, a.req.disk)
    const size = v.size ?? 0
    const at = free.findIndex((left) => left + 0.0005 >= size)
    if (at < 0) {
      const where = a.reservation === undefined ? "unreserved" : `in reservation ${a.reservation.text}`
      return `volume "${v.persistenceId}" needs disk:${size} in one piece, the largest left ${where} is ${Math.max(0, ...free)}`
    }
    free[at] = free[at]! - size
  }
  return undefined
}

/** What each splittable disk entry holds once the scratch disk is taken (first fit). */
const diskLeft = (pool: Pool, scratch: number): Array<number> => {
  const entries = (pool.entries.get("disk") ?? []).filter((e) => e.template.disk?.source?.type !== 3 /* MOUNT */)
  const left = entries.map((e) => e.amount)
  let need = scratch
  for (let i = 0; i < left.length && need > 0; i++) {
    const used = Math.min(left[i]!, need)
    left[i] = left[i]! - used
    need -= used
  }
  return left
}
