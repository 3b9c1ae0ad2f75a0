import { Resources, v1 } from "@berth/proto"
import { InvalidArgument, Unimplemented } from "../../ClusterError.ts"
import * as Validate from "./validation.ts"

/**
 * The operations of one Accept, applied in order to the offered resources (pure: no state is
 * touched until every operation has been checked, so an Accept is all or nothing). RESERVE turns
 * unreserved resources into reserved ones, CREATE reserved disk into a persistent volume, LAUNCH
 * and LAUNCH_GROUP consume resources, DESTROY and UNRESERVE undo the first two, in Mesos's semantics.
 */

export interface Context {
  readonly frameworkId: string
  readonly principal: string
  /** The role every offer of this Accept was allocated to. */
  readonly role: string
  readonly agentId: string
  /** Persistence ids of the volumes that exist on the agent (any role). */
  readonly volumes: ReadonlySet<string>
  /** Persistence ids of the volumes a live task on the agent uses. */
  readonly volumesInUse: ReadonlySet<string>
  /** Whether a task id is taken by a live task of this framework. */
  readonly taskExists: (taskId: string) => boolean
  /**
   * Whether an executor id is taken on the agent by a live executor of this framework (a task
   * group's executor, or a single task's command executor, whose id is the task id).
   */
  readonly executorExists?: ((executorId: string) => boolean) | undefined
  /**
   * The custom executor of this framework running on the agent under this id, if any: a task
   * naming it joins it (same program, nothing more consumed) instead of starting a new one.
   */
  readonly runningExecutor?: ((executorId: string) => v1.ExecutorInfo | undefined) | undefined
  /**
   * The default executor (TYPE_DEFAULT) of this framework running task groups on the agent under
   * this id, if any: live while it still runs a task. A LAUNCH_GROUP naming it with the same
   * ExecutorInfo joins it (Mesos' semantics: its tasks share the executor's sandbox and volumes)
   * instead of starting a new one; once its last task ended, the id starts a new executor.
   */
  readonly runningGroupExecutor?: ((executorId: string) => v1.ExecutorInfo | undefined) | undefined
}

/** A task group to run under one executor (LAUNCH_GROUP). */
export interface GroupLaunch {
  readonly executor: v1.ExecutorInfo
  /** The group's tasks, each stamped with the agent and the executor that runs it. */
  readonly tasks: Array<v1.TaskInfo>
}

export interface Conversion {
  readonly from: ReadonlyArray<v1.Resource>
  readonly to: ReadonlyArray<v1.Resource>
}

export interface Plan {
  /** Offered resources nothing used: they go back to the pool. */
  readonly leftover: Array<v1.Resource>
  /** How the agent's total resources change (RESERVE, UNRESERVE, CREATE, DESTROY), in order. */
  readonly conversions: Array<Conversion>
  readonly launches: Array<v1.TaskInfo>
  /** Task groups (LAUNCH_GROUP), each launched all or nothing by its executor. */
  readonly groups: Array<GroupLaunch>
  /** Operations the agent must carry out or checkpoint. */
  readonly agentOperations: Array<v1.Operation>
  /** Feedback for the operations that carry an id. */
  readonly finished: Array<{ readonly operationId: string; readonly converted: ReadonlyArray<v1.Resource> }>
  /**
   * Custom executors this Accept starts, with the resources they hold of their own (taken from
   * the offers once, whatever the number of tasks they run; given back when they exit).
   */
  readonly executors: Array<v1.ExecutorInfo>
}

const invalid = (field: string, rule: string) => new InvalidArgument({ field, rule })

/** Whether two ExecutorInfos name the same program (what a running executor was started with). */
const sameProgram = (running: v1.ExecutorInfo, wanted: v1.ExecutorInfo): boolean => {
  const encode = (e: v1.ExecutorInfo) =>
    Buffer.from(v1.ExecutorInfo.encode({ ...e, frameworkId: "", resources: Resources.normalize(e.resources.map((r) => ({ ...r, allocationRole: "" }))) }).finish())
  return encode(running).equals(encode(wanted))
}

/** The resource as it was before its last reservation. */
const unreserved = (r: v1.Resource): v1.Resource => ({ ...r, reservations: r.reservations.slice(0, -1) })

/** The plain reserved disk a volume was made from. */
const withoutVolume = (r: v1.Resource): v1.Resource => {
  const { disk, ...rest } = r
  return disk?.source === undefined ? rest : { ...rest, disk: { source: disk.source } }
}

const CONTAINER_PATH = /^(?!\/)(?!.*(^|\/)\.\.(\/|$))[A-Za-z0-9._/-]+$/

const checkReservation = (field: string, r: v1.Resource, ctx: Context): InvalidArgument | undefined => {
  const last = r.reservations.at(-1)
  if (last === undefined) return invalid(`${field}.reservations`, "must hold the reservation to make")
  if (last.type !== v1.ReservationInfo_Type.DYNAMIC) return invalid(`${field}.reservations`, "a framework can only make DYNAMIC reservations")
  if (last.role !== ctx.role) {
    return invalid(`${field}.reservations`, `role "${last.role}" is not the role the offer was allocated to ("${ctx.role}")`)
  }
  if (ctx.principal !== "" && last.principal !== "" && last.principal !== ctx.principal) {
    return invalid(`${field}.reservations`, `principal "${last.principal}" is not the framework's principal "${ctx.principal}"`)
  }
  return undefined
}

const needs = (field: string, pool: ReadonlyArray<v1.Resource>, wanted: ReadonlyArray<v1.Resource>) =>
  Resources.contains(pool, wanted)
    ? undefined
    : invalid(field, `needs ${Resources.format(wanted)} but what is left of the offers is ${Resources.format(pool) || "nothing"}`)

export const plan = (ctx: Context, operations: ReadonlyArray<v1.Operation>, offered: ReadonlyArray<v1.Resource>):
  | Plan
  | InvalidArgument
  | Unimplemented =>
{
  let pool = Resources.normalize(offered)
  const out: Plan = { leftover: [], conversions: [], launches: [], groups: [], agentOperations: [], finished: [], executors: [] }
  const startedExecutors = new Map<string, v1.ExecutorInfo>()
  /** Default executors this Accept starts (LAUNCH_GROUP): a later group of it joins them. */
  const startedGroupExecutors = new Map<string, v1.ExecutorInfo>()
  const seenTasks = new Set<string>()
  const createdVolumes = new Set<string>()
  const destroyedVolumes = new Set<string>()
  const seenExecutors = new Set<string>()
  const convert = (from: ReadonlyArray<v1.Resource>, to: ReadonlyArray<v1.Resource>) => {
    pool = Resources.add(Resources.subtract(pool, from), to)
    out.conversions.push({ from, to })
  }

  /** The rules every launched task keeps, in a LAUNCH or in a LAUNCH_GROUP. */
  const checkTask = (field: string, info: v1.TaskInfo): InvalidArgument | Unimplemented | undefined => {
    const problem = Validate.task(field, info, ctx.agentId)
    if (problem !== undefined) return problem
    if (seenTasks.has(info.taskId) || ctx.taskExists(info.taskId)) {
      return invalid(`${field}.taskId`, `task "${info.taskId}" already exists`)
    }
    return checkVolumes(`${field}.resources`, info.resources)
  }
  const checkVolumes = (field: string, resources: ReadonlyArray<v1.Resource>): InvalidArgument | undefined => {
    for (const [k, r] of resources.entries()) {
      const id = r.disk?.persistence?.id
      if (id !== undefined && id !== "" && destroyedVolumes.has(id)) {
        return invalid(`${field}[${k}]`, `volume "${id}" is destroyed by an earlier operation`)
      }
      const path = r.disk?.volume?.containerPath
      if (id !== undefined && id !== "" && (path === undefined || !CONTAINER_PATH.test(path))) {
        return invalid(`${field}[${k}].disk.volume.containerPath`, "must be a relative path inside the sandbox (no .., not absolute)")
      }
    }
    return undefined
  }

  for (const [i, operation] of operations.entries()) {
    const at = `operations[${i}]`
    const kind = operation.kind
    if (kind === undefined) return invalid(`${at}.kind`, "must be set (launch, reserve, unreserve, create, destroy, ...)")
    if (operation.operationId !== "" && !/^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,254}$/.test(operation.operationId)) {
      return invalid(`${at}.operationId`, "must be printable: letters, digits and _.:@- (at most 255)")
    }
    switch (kind.$case) {
      case "launch": {
        if (kind.value.taskInfos.length === 0) return invalid(`${at}.launch.taskInfos`, "must list at least one task")
        for (const [j, info] of kind.value.taskInfos.entries()) {
          const field = `${at}.launch.taskInfos[${j}]`
          const problem = checkTask(field, info)
          if (problem !== undefined) return problem
          const resources = Resources.allocate(info.resources, ctx.role)
          if (info.executor !== undefined) {
            // A custom executor: the first task naming it starts it (its own resources are taken
            // from the offers then); later tasks join it and must name the same program.
            const executorId = info.executor.executorId
            if (seenExecutors.has(executorId) && !startedExecutors.has(executorId)) {
              return invalid(`${field}.executor.executorId`, `executor "${executorId}" is already in use on agent ${ctx.agentId}`)
            }
            const running = startedExecutors.get(executorId) ?? ctx.runningExecutor?.(executorId)
            let stamped: v1.ExecutorInfo
            if (running !== undefined) {
              if (!sameProgram(running, info.executor)) {
                return invalid(
                  `${field}.executor`,
                  `executor "${executorId}" already runs on agent ${ctx.agentId} with another command, container or resources; reuse the same ExecutorInfo or pick a new id`
                )
              }
              stamped = running
              const short = needs(`${field}.resources`, pool, resources)
              if (short !== undefined) return short
              pool = Resources.subtract(pool, resources)
            } else {
              if (ctx.executorExists?.(executorId) === true) {
                return invalid(`${field}.executor.executorId`, `executor "${executorId}" is already in use on agent ${ctx.agentId}`)
              }
              stamped = { ...info.executor, frameworkId: ctx.frameworkId, resources: Resources.allocate(info.executor.resources, ctx.role) }
              const both = Resources.add(stamped.resources, resources)
              const short = needs(`${field}.resources`, pool, both)
              if (short !== undefined) {
                return invalid(`${field}.resources`, `the new executor "${executorId}" and its first task together: ${short.rule}`)
              }
              pool = Resources.subtract(pool, both)
              startedExecutors.set(executorId, stamped)
              out.executors.push(stamped)
            }
            seenTasks.add(info.taskId)
            seenExecutors.add(executorId)
            out.launches.push({ ...info, agentId: ctx.agentId, resources, executor: stamped })
            continue
          }
          // A single task's command executor is named after the task (its sandbox directory).
          if (seenExecutors.has(info.taskId) || ctx.executorExists?.(info.taskId) === true) {
            return invalid(`${field}.taskId`, `executor "${info.taskId}" is already in use on agent ${ctx.agentId}`)
          }
          seenTasks.add(info.taskId)
          seenExecutors.add(info.taskId)
          const short = needs(`${field}.resources`, pool, resources)
          if (short !== undefined) return short
          pool = Resources.subtract(pool, resources)
          out.launches.push({ ...info, agentId: ctx.agentId, resources })
        }
        break
      }
      case "reserve": {
        const wanted = kind.value.resources
        if (wanted.length === 0) return invalid(`${at}.reserve.resources`, "must list the resources to reserve")
        for (const [j, r] of wanted.entries()) {
          const problem = checkReservation(`${at}.reserve.resources[${j}]`, r, ctx)
          if (problem !== undefined) return problem
          if (r.disk?.persistence !== undefined) {
            return invalid(`${at}.reserve.resources[${j}].disk.persistence`, "reserve plain disk first, then CREATE the volume")
          }
        }
        const to = Resources.allocate(wanted.map((r) => ({ ...r, reservations: [...r.reservations] })), ctx.role)
        const from = to.map(unreserved)
        const problem = needs(`${at}.reserve.resources`, pool, from)
        if (problem !== undefined) return problem
        convert(from, to)
        out.agentOperations.push(operation)
        if (operation.operationId !== "") out.finished.push({ operationId: operation.operationId, converted: to })
        break
      }
      case "unreserve": {
        const wanted = kind.value.resources
        if (wanted.length === 0) return invalid(`${at}.unreserve.resources`, "must list the resources to unreserve")
        for (const [j, r] of wanted.entries()) {
          const field = `${at}.unreserve.resources[${j}]`
          const problem = checkReservation(field, r, ctx)
          if (problem !== undefined) return problem
          if (r.disk?.persistence?.id) {
            return invalid(`${field}.disk.persistence`, `volume "${r.disk.persistence.id}" lives on this disk: DESTROY it before UNRESERVE`)
          }
        }
        const from = Resources.allocate(wanted, ctx.role)
        const problem = needs(`${at}.unreserve.resources`, pool, from)
        if (problem !== undefined) return problem
        const to = from.map(unreserved)
        convert(from, to)
        out.agentOperations.push(operation)
        if (operation.operationId !== "") out.finished.push({ operationId: operation.operationId, converted: to })
        break
      }
      case "create": {
        const volumes = kind.value.volumes
        if (volumes.length === 0) return invalid(`${at}.create.volumes`, "must list the volumes to create")
        for (const [j, v] of volumes.entries()) {
          const field = `${at}.create.volumes[${j}]`
          if (v.name !== "disk" || v.value?.$case !== "scalar") return invalid(field, "a volume is a scalar disk resource")
          if (v.reservations.length === 0) return invalid(`${field}.reservations`, "a volume needs reserved disk: RESERVE it first")
          const last = v.reservations.at(-1)!
          if (last.role !== ctx.role) return invalid(`${field}.reservations`, `role "${last.role}" is not the offer's role "${ctx.role}"`)
          const id = v.disk?.persistence?.id ?? ""
          if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/.test(id)) {
            return invalid(`${field}.disk.persistence.id`, "must match [A-Za-z0-9][A-Za-z0-9_.-]{0,127} (it names a directory)")
          }
          if (ctx.volumes.has(id) || createdVolumes.has(id)) {
            return invalid(`${field}.disk.persistence.id`, `a volume "${id}" already exists on agent ${ctx.agentId}`)
          }
          const path = v.disk?.volume?.containerPath ?? ""
          if (!CONTAINER_PATH.test(path)) {
            return invalid(`${field}.disk.volume.containerPath`, "must be a relative path inside the sandbox (no .., not absolute)")
          }
          createdVolumes.add(id)
        }
        const to = Resources.allocate(volumes, ctx.role)
        const from = to.map(withoutVolume)
        const problem = needs(`${at}.create.volumes`, pool, from)
        if (problem !== undefined) return problem
        convert(from, to)
        out.agentOperations.push(operation)
        if (operation.operationId !== "") out.finished.push({ operationId: operation.operationId, converted: to })
        break
      }
      case "destroy": {
        const volumes = kind.value.volumes
        if (volumes.length === 0) return invalid(`${at}.destroy.volumes`, "must list the volumes to destroy")
        for (const [j, v] of volumes.entries()) {
          const field = `${at}.destroy.volumes[${j}]`
          const id = v.disk?.persistence?.id ?? ""
          if (id === "" || !(ctx.volumes.has(id) || createdVolumes.has(id))) {
            return invalid(`${field}.disk.persistence.id`, `no volume "${id}" exists on agent ${ctx.agentId}`)
          }
          if (ctx.volumesInUse.has(id)) return invalid(`${field}.disk.persistence.id`, `volume "${id}" is in use by a running task`)
          destroyedVolumes.add(id)
        }
        const from = Resources.allocate(volumes, ctx.role)
        const problem = needs(`${at}.destroy.volumes`, pool, from)
        if (problem !== undefined) return problem
        const to = from.map(withoutVolume)
        convert(from, to)
        out.agentOperations.push(operation)
        if (operation.operationId !== "") out.finished.push({ operationId: operation.operationId, converted: to })
        break
      }
      case "launchGroup": {
        // All or nothing: every rule is checked, and every resource counted, before the group is
        // planned; a problem with any task rejects the whole Accept.
        const field = `${at}.launchGroup`
        const executor = kind.value.executor
        const problem = Validate.executor(`${field}.executor`, executor, ctx.frameworkId)
        if (problem !== undefined) return problem
        const executorId = executor!.executorId
        // A default executor that still runs a task takes further groups, as in Mesos: they need
        // the ExecutorInfo it was started with, and consume their tasks' resources only.
        const joining = startedGroupExecutors.get(executorId) ?? ctx.runningGroupExecutor?.(executorId)
        if (joining !== undefined && !sameProgram(joining, executor!)) {
          return invalid(
            `${field}.executor`,
            `executor "${executorId}" already runs task groups on agent ${ctx.agentId} with another ExecutorInfo; a group joins a running default executor only with the ExecutorInfo it was started with (same type, name, resources, labels, container and data): send that one, or pick a new executor id`
          )
        }
        if (joining === undefined && (seenExecutors.has(executorId) || ctx.executorExists?.(executorId) === true)) {
          return invalid(
            `${field}.executor.executorId`,
            `executor "${executorId}" is already in use by a live command or custom executor of this framework on agent ${ctx.agentId}; only a running default executor (TYPE_DEFAULT) takes further task groups`
          )
        }
        const infos = kind.value.taskGroup?.tasks ?? []
        if (infos.length === 0) return invalid(`${field}.taskGroup.tasks`, "must list at least one task")
        // A running executor's own resources were taken when it started: never twice.
        let needed = joining === undefined ? Resources.allocate(executor!.resources, ctx.role) : []
        const tasks: Array<v1.TaskInfo> = []
        for (const [j, info] of infos.entries()) {
          const at_ = `${field}.taskGroup.tasks[${j}]`
          if (info.executor !== undefined) return invalid(`${at_}.executor`, "must be unset: the group's executor runs every task of the group")
          if (info.container?.type === v1.ContainerInfo_Type.DOCKER) {
            return new Unimplemented({ field: `${at_}.container`, feature: "Docker tasks in a task group (the default executor runs commands)" })
          }
          const taskProblem = checkTask(at_, info)
          if (taskProblem !== undefined) return taskProblem
          seenTasks.add(info.taskId)
          const resources = Resources.allocate(info.resources, ctx.role)
          needed = Resources.add(needed, resources)
          tasks.push({ ...info, agentId: ctx.agentId, resources })
        }
        const short = needs(`${field}.resources`, pool, needed)
        if (short !== undefined) {
          return invalid(
            `${field}.resources`,
            joining === undefined
              ? `the executor and its ${infos.length} tasks together: ${short.rule}; nothing of the group is launched`
              : `the ${infos.length} tasks of the group joining executor "${executorId}": ${short.rule}; nothing of the group is launched`
          )
        }
        pool = Resources.subtract(pool, needed)
        seenExecutors.add(executorId)
        // Joining: the agent is given the ExecutorInfo the executor runs with (it checks it too).
        const stamped: v1.ExecutorInfo = joining ?? {
          ...executor!,
          frameworkId: ctx.frameworkId,
          resources: Resources.allocate(executor!.resources, ctx.role)
        }
        startedGroupExecutors.set(executorId, stamped)
        out.groups.push({ executor: stamped, tasks: tasks.map((t) => ({ ...t, executor: stamped })) })
        break
      }
    }
  }
  return { ...out, leftover: pool }
}
