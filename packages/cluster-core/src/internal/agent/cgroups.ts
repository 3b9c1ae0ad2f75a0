import { Resources, v1 } from "@berth/proto"
import type { CommandExecutor } from "@berth/sdk-executor"
import { Effect } from "effect"
import { createHash } from "node:crypto"
import * as fs from "node:fs"
import * as path from "node:path"

/**
 * CPU and memory limits for process tasks through Linux cgroups: one cgroup per task under a
 * subtree the agent owns, `cpu` set from the task's `cpus` and `memory` from its `mem`. The
 * task's wrapper shell joins the cgroup before it runs the command, so everything the task
 * forks is inside. The kernel OOM-kills a task that outgrows its memory; the agent reads that
 * from the cgroup (`oom_kill` in `memory.events`, or `memory.oom_control` with cgroup v1) and
 * reports REASON_CONTAINER_LIMITATION_MEMORY.
 *
 * cgroup v2 (the unified hierarchy at /sys/fs/cgroup) is used when its root delegates `cpu` and
 * `memory`; else cgroup v1 when the `memory` and `cpu` hierarchies are mounted and writable (the
 * subtree then goes under the agent's own cgroup in each). Anything else: no limits, said once at
 * startup.
 */

const CGROUP_ROOT = "/sys/fs/cgroup"
const PERIOD_US = 100_000
/** The smallest limits set, as Mesos' containerizer does: a shell alone needs a few MB. */
const MIN_MEMORY_MB = 32
const MIN_CPUS = 0.01

export type Available =
  | { readonly _tag: "V2"; readonly base: string }
  | { readonly _tag: "V1"; readonly memory: string; readonly cpu: string }

export type Detection = Available | { readonly _tag: "Unavailable"; readonly reason: string }

const read = (file: string): string | undefined => {
  try {
    return fs.readFileSync(file, "utf8")
  } catch {
    return undefined
  }
}

/** `/proc/self/cgroup` as hierarchy → path (v2 is under ""). */
const ownCgroups = (): Map<string, string> => {
  const out = new Map<string, string>()
  for (const line of (read("/proc/self/cgroup") ?? "").split("\n")) {
    const [, controllers, cgroupPath] = /^\d+:([^:]*):(.*)$/.exec(line) ?? []
    if (controllers === undefined || cgroupPath === undefined) continue
    for (const controller of controllers.split(",")) out.set(controller, cgroupPath)
  }
  return out
}

/** Makes `dir` (the agent's subtree) and checks that a child can be made in it. */
const probe = (dir: string): string | undefined => {
  try {
    fs.mkdirSync(dir, { recursive: true })
    const child = path.join(dir, `probe-${process.pid}`)
    fs.mkdirSync(child)
    fs.rmdirSync(child)
    return undefined
  } catch (error) {
    return `${dir}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`
  }
}

/** Finds what this machine allows; `name` names the agent's subtree (one per work dir). */
export const detect = (workDir: string): Detection => {
  const name = `berth-${createHash("sha256").update(path.resolve(workDir)).digest("hex").slice(0, 12)}`
  const problems: Array<string> = []
  const v2Controllers = read(path.join(CGROUP_ROOT, "cgroup.controllers"))
  if (v2Controllers !== undefined) {
    const controllers = v2Controllers.trim().split(/\s+/)
    if (!controllers.includes("cpu") || !controllers.includes("memory")) {
      problems.push(`cgroup v2 at ${CGROUP_ROOT} offers "${v2Controllers.trim()}", not cpu and memory`)
    } else {
      const base = path.join(CGROUP_ROOT, name)
      try {
        // The root must hand cpu and memory down; an agent's own subtree then hands them on.
        const subtree = read(path.join(CGROUP_ROOT, "cgroup.subtree_control")) ?? ""
        if (!/\bcpu\b/.test(subtree) || !/\bmemory\b/.test(subtree)) fs.writeFileSync(path.join(CGROUP_ROOT, "cgroup.subtree_control"), "+cpu +memory")
        const problem = probe(base)
        if (problem !== undefined) throw new Error(problem)
        fs.writeFileSync(path.join(base, "cgroup.subtree_control"), "+cpu +memory")
        return { _tag: "V2", base }
      } catch (error) {
        problems.push(`cgroup v2: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`)
      }
    }
  } else {
    problems.push(`no cgroup v2 hierarchy at ${CGROUP_ROOT}`)
  }
  const own = ownCgroups()
  const memoryMount = path.join(CGROUP_ROOT, "memory")
  const cpuMount = [path.join(CGROUP_ROOT, "cpu"), path.join(CGROUP_ROOT, "cpu,cpuacct")].find((dir) => fs.existsSync(path.join(dir, "cpu.cfs_quota_us")))
  if (!fs.existsSync(path.join(memoryMount, "memory.limit_in_bytes")) || cpuMount === undefined || !own.has("memory") || !own.has("cpu")) {
    problems.push("no cgroup v1 memory and cpu hierarchies")
    return { _tag: "Unavailable", reason: problems.join("; ") }
  }
  const memory = path.join(memoryMount, own.get("memory")!, name)
  const cpu = path.join(cpuMount, own.get("cpu")!, name)
  const problem = probe(memory) ?? probe(cpu)
  if (problem !== undefined) {
    problems.push(`cgroup v1: ${problem}`)
    return { _tag: "Unavailable", reason: problems.join("; ") }
  }
  return { _tag: "V1", memory, cpu }
}

export const describe = (detection: Detection): string =>
  detection._tag === "V2"
    ? `cgroup v2 under ${detection.base}`
    : detection._tag === "V1"
    ? `cgroup v1 under ${detection.memory} and ${detection.cpu}`
    : detection.reason

const scalar = (resources: ReadonlyArray<v1.Resource>, name: string): number => Resources.sumScalar(resources, name)

const oomKills = (file: string): number => {
  const match = /^oom_kill (\d+)$/m.exec(read(file) ?? "")
  return match === null ? 0 : Number(match[1])
}

const removeDir = (dir: string) =>
  Effect.sync(() => {
    try {
      fs.rmdirSync(dir)
    } catch (error) {
      // Gone already, or a leftover process still in it (then the next agent start finds it).
      if ((error as NodeJS.ErrnoException).code !== "ENOENT") return
    }
  })

/**
 * The isolation for the command executor: a cgroup per task, named after the run (`key`), with
 * limits from the task's resources. A recovered task gets its existing cgroup back.
 */
export const isolation = (available: Available, key: string): CommandExecutor.Isolation => ({
  prepare: (task, recovered) =>
    Effect.try({ catch: (error) => new Error(`cgroup: ${(error as Error).message}`), try: () => {
      const name = `${key}-${task.taskId}`.replace(/[^A-Za-z0-9._-]/g, "_")
      const mem = scalar(task.resources, "mem")
      const cpus = scalar(task.resources, "cpus")
      const limitMb = Math.max(mem, MIN_MEMORY_MB)
      const memoryBytes = Math.floor(limitMb * 1024 * 1024)
      const quota = Math.max(1000, Math.floor(Math.max(cpus, MIN_CPUS) * PERIOD_US))
      const limitMessage = `the task used more than its ${limitMb} MB of memory and was killed (its cgroup's memory limit)`
      if (available._tag === "V2") {
        const dir = path.join(available.base, name)
        if (!recovered) {
          fs.mkdirSync(dir, { recursive: true })
          if (cpus > 0) fs.writeFileSync(path.join(dir, "cpu.max"), `${quota} ${PERIOD_US}`)
          if (mem > 0) {
            fs.writeFileSync(path.join(dir, "memory.max"), String(memoryBytes))
            // Out of memory means killed, not swapped out until it crawls.
            if (fs.existsSync(path.join(dir, "memory.swap.max"))) fs.writeFileSync(path.join(dir, "memory.swap.max"), "0")
          }
        }
        const events = path.join(dir, "memory.events")
        return {
          procsFiles: [path.join(dir, "cgroup.procs")],
          limitation: () =>
            oomKills(events) > 0 ? { reason: v1.TaskStatus_Reason.CONTAINER_LIMITATION_MEMORY, message: limitMessage } : undefined,
          release: removeDir(dir)
        }
      }
      const memoryDir = path.join(available.memory, name)
      const cpuDir = path.join(available.cpu, name)
      if (!recovered) {
        fs.mkdirSync(memoryDir, { recursive: true })
        fs.mkdirSync(cpuDir, { recursive: true })
        if (cpus > 0) {
          fs.writeFileSync(path.join(cpuDir, "cpu.cfs_period_us"), String(PERIOD_US))
          fs.writeFileSync(path.join(cpuDir, "cpu.cfs_quota_us"), String(quota))
        }
        if (mem > 0) {
          fs.writeFileSync(path.join(memoryDir, "memory.limit_in_bytes"), String(memoryBytes))
          const memsw = path.join(memoryDir, "memory.memsw.limit_in_bytes")
          if (fs.existsSync(memsw)) fs.writeFileSync(memsw, String(memoryBytes))
        }
      }
      const oomControl = path.join(memoryDir, "memory.oom_control")
      return {
        procsFiles: [path.join(memoryDir, "cgroup.procs"), path.join(cpuDir, "cgroup.procs")],
        limitation: () =>
          oomKills(oomControl) > 0 ? { reason: v1.TaskStatus_Reason.CONTAINER_LIMITATION_MEMORY, message: limitMessage } : undefined,
        release: Effect.andThen(removeDir(memoryDir), removeDir(cpuDir))
      }
    } })
})

/** Removes the agent's subtree when no task cgroup is left in it (at agent stop). */
export const releaseSubtree = (available: Available): Effect.Effect<void> =>
  available._tag === "V2" ? removeDir(available.base) : Effect.andThen(removeDir(available.memory), removeDir(available.cpu))

/**
 * Removes the task cgroups of the agent's subtree that no process uses any more: those of tasks
 * that ended while no agent watched them (an agent that was SIGKILLed never released them). A
 * cgroup still in use cannot be removed (EBUSY) and is kept.
 */
export const sweep = (available: Available): Effect.Effect<number> =>
  Effect.sync(() => {
    let removed = 0
    for (const base of available._tag === "V2" ? [available.base] : [available.memory, available.cpu]) {
      let entries: Array<fs.Dirent>
      try {
        entries = fs.readdirSync(base, { withFileTypes: true })
      } catch {
        continue
      }
      for (const entry of entries) {
        if (!entry.isDirectory()) continue
        try {
          fs.rmdirSync(path.join(base, entry.name))
          removed++
        } catch {
          // In use: a task still runs in it.
        }
      }
    }
    return removed
  })
