import { Resources, v1 } from "@berth/proto"
import { Requirement } from "@berth/sdk-scheduler"

/** A synthetic offer: `cpus:4;mem:4096;disk:10000;ports:[31000-31009]` unless told otherwise. */
export const offer = (
  n: number | string,
  options: {
    readonly resources?: string | ReadonlyArray<v1.Resource>
    readonly attributes?: Record<string, string>
    readonly role?: string
    readonly hostname?: string
  } = {}
): v1.Offer => {
  const role = options.role ?? "kv-role"
  const resources = typeof options.resources === "object"
    ? options.resources
    : Resources.parse(options.resources ?? "cpus:4;mem:4096;disk:10000;ports:[31000-31009]")
  return {
    offerId: `offer-${n}`,
    frameworkId: "fw",
    agentId: `agent-${n}`,
    hostname: options.hostname ?? `host-${n}`,
    resources: Resources.allocate(resources, role),
    attributes: Object.entries(options.attributes ?? {}).map(([name, text]) => ({ name, value: { $case: "text", value: text } })),
    allocationRole: role,
    executorIds: [],
    expiresAtMs: 0
  }
}

export const req = (id: string, extra: Partial<Requirement.Encoded> = {}): Requirement.Requirement =>
  Requirement.decodeSync({ id, group: "kv", resources: { cpus: 1, mem: 256 }, ...extra })

export const dynamic = (role: string, labels: Record<string, string>, principal = ""): v1.ReservationInfo => ({
  type: v1.ReservationInfo_Type.DYNAMIC,
  role,
  principal,
  labels: { labels: Object.entries(labels).map(([key, value]) => ({ key, value })) }
})

export const reserved = (text: string, role: string, labels: Record<string, string>): Array<v1.Resource> =>
  Resources.parse(text).map((r) => ({ ...r, reservations: [dynamic(role, labels)] }))

export const launchedResources = (ops: ReadonlyArray<v1.Operation>): Array<v1.Resource> =>
  ops.flatMap((op) =>
    op.kind?.$case === "launch" ? op.kind.value.taskInfos.flatMap((t) => t.resources)
    : op.kind?.$case === "launchGroup" ? op.kind.value.taskGroup!.tasks.flatMap((t) => t.resources)
    : []
  )

/**
 * Applies an Accept's operations to the offered resources with the master's rules (RESERVE
 * converts unreserved into reserved, CREATE reserved disk into a volume, LAUNCH consumes), and
 * returns the first problem, or what is left.
 */
export const apply = (offered: ReadonlyArray<v1.Resource>, ops: ReadonlyArray<v1.Operation>): { left: Array<v1.Resource> } | { error: string } => {
  let pool = Resources.normalize(offered)
  const take = (what: ReadonlyArray<v1.Resource>, at: string): string | undefined => {
    if (!Resources.contains(pool, what)) return `${at}: needs ${Resources.format(what)}, left ${Resources.format(pool)}`
    pool = Resources.subtract(pool, what)
    return undefined
  }
  for (const [i, op] of ops.entries()) {
    const kind = op.kind!
    switch (kind.$case) {
      case "reserve": {
        const from = kind.value.resources.map((r) => ({ ...r, reservations: r.reservations.slice(0, -1) }))
        const e = take(from, `operations[${i}] reserve`)
        if (e) return { error: e }
        pool = Resources.add(pool, kind.value.resources)
        break
      }
      case "create": {
        const from = kind.value.volumes.map((r) => {
          const { disk, ...rest } = r
          return disk?.source === undefined ? rest : { ...rest, disk: { source: disk.source } }
        })
        const e = take(from, `operations[${i}] create`)
        if (e) return { error: e }
        pool = Resources.add(pool, kind.value.volumes)
        break
      }
      case "launch": {
        for (const t of kind.value.taskInfos) {
          const e = take(t.resources, `operations[${i}] launch ${t.taskId}`)
          if (e) return { error: e }
        }
        break
      }
      case "launchGroup": {
        const e = take(kind.value.taskGroup!.tasks.flatMap((t) => t.resources), `operations[${i}] launchGroup`)
        if (e) return { error: e }
        break
      }
      default:
        return { error: `unexpected ${kind.$case}` }
    }
  }
  return { left: pool }
}
