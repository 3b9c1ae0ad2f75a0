import { v1 } from "@berth/proto"
import type { Attempt } from "./types.ts"
import * as Ports from "./ports.ts"
import { round, type Pool } from "./view.ts"

export interface Committed {
  readonly operations: Array<v1.Operation>
  readonly ports: Record<string, number>
  readonly reserved: boolean
  readonly created: Array<string>
  readonly resources: Array<v1.Resource>
}

/** Takes `amount` of `name` out of the pool, entry by entry, as resources of those entries. */
const takeScalar = (pool: Pool, name: string, amount: number, out: Array<v1.Resource>, filter?: (r: v1.Resource) => boolean): void => {
  const entries = pool.entries.get(name)
  if (entries === undefined || amount <= 0) return
  let need = amount
  for (const e of entries) {
    if (need <= 0.0005) break
    if (e.amount <= 0.0005 || (filter !== undefined && !filter(e.template))) continue
    const used = round(Math.min(e.amount, need))
    e.amount = round(e.amount - used)
    need = round(need - used)
    out.push({ ...e.template, value: { $case: "scalar", value: used } })
  }
  pool.amounts.set(name, round((pool.amounts.get(name) ?? 0) - amount + need))
}

/** One piece of disk of `size` from a single splittable entry. */
const takeDiskPiece = (pool: Pool, size: number): v1.Resource => {
  const entries = pool.entries.get("disk") ?? []
  const e = entries.find((x) => x.template.disk?.source?.type !== 3 && x.amount + 0.0005 >= size)!
  e.amount = round(e.amount - size)
  pool.amounts.set("disk", round((pool.amounts.get("disk") ?? 0) - size))
  return { ...e.template, value: { $case: "scalar", value: size } }
}

const env = (name: string) => `PORT_${name.toUpperCase().replace(/-/g, "_")}`

const withPortEnv = (command: v1.CommandInfo | undefined, ports: Record<string, number>): v1.CommandInfo | undefined => {
  if (command === undefined) return undefined
  const names = Object.keys(ports)
  if (names.length === 0) return command
  return {
    ...command,
    environment: [...command.environment, ...names.map((n) => ({ name: env(n), value: String(ports[n]) }))]
  }
}

export interface Options {
  readonly principal: string
  readonly operationId: ((requirementId: string, kind: "reserve" | "create" | "launch") => string) | undefined
}

/**
 * Consumes what the attempt needs from its offer and builds the operations: RESERVE (with the
 * requirement's labels) when the resources are not reserved yet, CREATE for volumes not offered
 * yet, then LAUNCH (or LAUNCH_GROUP) with the task's resources, port ranges and volumes.
 */
export const commit = (a: Attempt, options: Options): Committed => {
  const req = a.req
  const view = a.view
  const pool = a.pool
  const role = view.role
  const taken: Array<v1.Resource> = []
  takeScalar(pool, "cpus", req.cpus, taken)
  takeScalar(pool, "mem", req.mem, taken)
  if (req.gpus > 0) takeScalar(pool, "gpus", req.gpus, taken)
  if (req.disk > 0) takeScalar(pool, "disk", req.disk, taken, (r) => r.disk?.source?.type !== 3)
  const { assigned, resources: portResources } = Ports.take(pool, req.ports, req.fixedPorts)
  taken.push(...portResources)

  // Volumes: offered ones are reused; new ones take a disk piece each (reserved below if needed).
  const volumeDisks: Array<{ readonly volume: (typeof req.volumes)[number]; readonly disk: v1.Resource; readonly offered: boolean }> = []
  for (const volume of req.volumes) {
    const offered = view.volumes.get(volume.persistenceId)
    if (offered !== undefined) {
      view.volumes.delete(volume.persistenceId)
      volumeDisks.push({ volume, disk: offered, offered: true })
    } else {
      volumeDisks.push({ volume, disk: takeDiskPiece(pool, volume.size ?? 0), offered: false })
    }
  }

  const operations: Array<v1.Operation> = []
  const opId = (kind: "reserve" | "create" | "launch") => options.operationId?.(req.id, kind) ?? ""
  const reservation: v1.ReservationInfo | undefined = a.reserve
    ? {
      type: v1.ReservationInfo_Type.DYNAMIC,
      role,
      principal: options.principal,
      labels: { labels: req.labels!.map(([key, value]) => ({ key, value })) }
    }
    : undefined
  const reserve = (r: v1.Resource): v1.Resource =>
    reservation === undefined ? r : { ...r, allocationRole: role, reservations: [...r.reservations, reservation] }

  const taskResources = taken.map(reserve)
  const newDisks = volumeDisks.filter((v) => !v.offered).map((v) => reserve(v.disk))
  // Held in the reservation for later tasks, not launched now (`reservation.extra`).
  const extra: Array<v1.Resource> = []
  if (reservation !== undefined) {
    takeScalar(pool, "cpus", req.extra.cpus, extra)
    takeScalar(pool, "mem", req.extra.mem, extra)
    takeScalar(pool, "gpus", req.extra.gpus, extra)
    takeScalar(pool, "disk", req.extra.disk, extra, (r) => r.disk?.source?.type !== 3)
    operations.push({ operationId: opId("reserve"), kind: { $case: "reserve", value: { resources: [...taskResources, ...extra.map(reserve), ...newDisks] } } })
  }
  const mode = (m: "RW" | "RO" | undefined) => (m === "RO" ? v1.Volume_Mode.RO : v1.Volume_Mode.RW)
  const created: Array<string> = []
  const volumeResources: Array<v1.Resource> = []
  let k = 0
  for (const { volume, disk, offered } of volumeDisks) {
    if (offered) {
      volumeResources.push({
        ...disk,
        allocationRole: role,
        disk: { ...disk.disk, volume: { containerPath: volume.containerPath, hostPath: "", mode: mode(volume.mode) } }
      })
      continue
    }
    const base = newDisks[k++]!
    created.push(volume.persistenceId)
    volumeResources.push({
      ...base,
      allocationRole: role,
      disk: {
        ...(base.disk?.source === undefined ? {} : { source: base.disk.source }),
        persistence: { id: volume.persistenceId, principal: options.principal },
        volume: { containerPath: volume.containerPath, hostPath: "", mode: mode(volume.mode) }
      }
    })
  }
  if (created.length > 0) {
    const fresh = volumeResources.filter((r) => created.includes(r.disk?.persistence?.id ?? ""))
    operations.push({ operationId: opId("create"), kind: { $case: "create", value: { volumes: fresh } } })
  }
  const resources = [...taskResources.map((r) => ({ ...r, allocationRole: role })), ...volumeResources]
  if (req.group_ !== undefined) {
    const shares = splitShares(req.group_.tasks, resources)
    const tasks: Array<v1.TaskInfo> = req.group_.tasks.map((t, i) => ({
      ...t,
      agentId: view.offer.agentId,
      resources: shares[i]!,
      ...commandWith(t.command, assigned)
    }))
    operations.push({
      operationId: opId("launch"),
      kind: { $case: "launchGroup", value: { executor: { ...req.group_.executor, resources: [] }, taskGroup: { tasks } } }
    })
  } else {
    const template = req.task ?? {}
    const task: v1.TaskInfo = {
      ...v1.TaskInfo.create(template),
      name: template.name ?? req.id,
      taskId: template.taskId ?? req.id,
      agentId: view.offer.agentId,
      resources,
      ...commandWith(template.command, assigned)
    }
    operations.push({ operationId: opId("launch"), kind: { $case: "launch", value: { taskInfos: [task] } } })
  }

  view.usedCpus = round(view.usedCpus + req.cpus + (reservation === undefined ? 0 : req.extra.cpus))
  view.usedMem = round(view.usedMem + req.mem + (reservation === undefined ? 0 : req.extra.mem))
  view.operations.push(...operations)
  return { operations, ports: assigned, reserved: reservation !== undefined, created, resources }
}

const SCALARS = new Set(["cpus", "mem", "disk", "gpus"])

/**
 * Shares a group's resources among its tasks: a task whose template declares scalars (say
 * `cpus` 0.5 and `mem` 256) gets those amounts, carved out of the requirement's resources with
 * their reservation; whatever is left (the undeclared amounts, port ranges, volumes) goes on the
 * first task. The agent limits each task by its own resources, so a task given none would be
 * held to the minimum.
 */
const splitShares = (tasks: ReadonlyArray<v1.TaskInfo>, resources: ReadonlyArray<v1.Resource>): Array<Array<v1.Resource>> => {
  const left = resources.map((r) => ({ resource: r, amount: r.value?.$case === "scalar" ? r.value.value : 0 }))
  const shares = tasks.map((task) => {
    const own: Array<v1.Resource> = []
    for (const declared of task.resources) {
      if (!SCALARS.has(declared.name) || declared.value?.$case !== "scalar" || declared.disk?.persistence !== undefined) continue
      let need = declared.value.value
      for (const l of left) {
        if (need <= 0.0005) break
        if (l.resource.name !== declared.name || l.resource.disk?.persistence !== undefined || l.amount <= 0.0005) continue
        const used = round(Math.min(l.amount, need))
        l.amount = round(l.amount - used)
        need = round(need - used)
        own.push({ ...l.resource, value: { $case: "scalar", value: used } })
      }
    }
    return own
  })
  const rest = left.flatMap(({ resource, amount }) =>
    resource.value?.$case !== "scalar" ? [resource] : amount > 0.0005 ? [{ ...resource, value: { $case: "scalar" as const, value: amount } }] : []
  )
  if (shares.length > 0) shares[0] = [...shares[0]!, ...rest]
  return shares
}

const commandWith = (command: v1.CommandInfo | undefined, ports: Record<string, number>): { command?: v1.CommandInfo } => {
  const c = withPortEnv(command, ports)
  return c === undefined ? {} : { command: c }
}
