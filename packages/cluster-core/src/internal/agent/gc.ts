import { Clock, Deferred, Effect, type Scope } from "effect"
import * as fs from "node:fs/promises"
import * as path from "node:path"

/**
 * Sandbox garbage collection (Mesos' `--gc_delay`): the sandbox and the checkpoint of a run whose
 * terminal update was acknowledged are removed a fixed delay after that acknowledgement. The
 * removal never follows a symbolic link (persistent volumes are linked into sandboxes) and never
 * descends into another file system (a bind-mounted volume): those are left alone and reported,
 * so volume data is never touched (invariant 4).
 */

/**
 * Removes `root` and everything in it, except what lies behind a symbolic link (the link itself
 * goes) or on another device than `root` (kept, and so are the directories above it). Returns the
 * paths it had to keep.
 */
export const removeTree = async (root: string): Promise<Array<string>> => {
  let rootDevice: number
  try {
    rootDevice = (await fs.lstat(root)).dev
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return []
    throw error
  }
  const kept: Array<string> = []
  const remove = async (entry: string): Promise<boolean> => {
    let stat
    try {
      stat = await fs.lstat(entry)
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") return true
      throw error
    }
    if (stat.dev !== rootDevice) {
      kept.push(entry)
      return false
    }
    if (!stat.isDirectory()) {
      await fs.unlink(entry)
      return true
    }
    let empty = true
    for (const name of await fs.readdir(entry)) {
      if (!(await remove(path.join(entry, name)))) empty = false
    }
    if (empty) await fs.rmdir(entry)
    return empty
  }
  await remove(root)
  return kept
}

/** Removes `dir` and then its parents up to (not including) `stop`, as long as they are empty. */
const removeEmptyParents = async (dir: string, stop: string): Promise<void> => {
  let current = dir
  while (current.startsWith(stop + path.sep)) {
    try {
      await fs.rmdir(current)
    } catch {
      return // not empty (a newer run), or gone already
    }
    current = path.dirname(current)
  }
}

export interface Collectable {
  /** The run's sandbox: `<work-dir>/frameworks/<fid>/executors/<eid>/runs/<run>`. */
  readonly sandbox: string
  /** The run's checkpoint directory under `<work-dir>/meta`. */
  readonly checkpoint: string
}

/** Removes one run's sandbox and checkpoint, and the directories they leave empty. */
export const collect = (workDir: string, run: Collectable) =>
  Effect.gen(function*() {
    const kept = yield* Effect.promise(() => removeTree(run.sandbox))
    if (kept.length > 0) {
      yield* Effect.logWarning("sandbox GC kept entries on another file system (a mounted volume?)").pipe(
        Effect.annotateLogs({ sandbox: run.sandbox, kept: kept.join(", ") })
      )
    }
    yield* Effect.promise(async () => {
      const runs = path.dirname(run.sandbox)
      // "runs/latest" points at the newest run; once that run is gone, so is the link.
      const latest = path.join(runs, "latest")
      const target = await fs.readlink(latest).catch(() => undefined)
      if (target === path.basename(run.sandbox)) await fs.rm(latest, { force: true })
      await removeEmptyParents(runs, path.join(workDir, "frameworks"))
      await fs.rm(run.checkpoint, { recursive: true, force: true })
      await removeEmptyParents(path.dirname(run.checkpoint), path.join(workDir, "meta", "frameworks"))
    })
  }).pipe(
    Effect.catchCause((cause) =>
      Effect.logWarning("sandbox GC failed").pipe(Effect.annotateLogs({ sandbox: run.sandbox, cause: String(cause) }))
    )
  )

/**
 * A collector: `schedule` removes a run `delayMs` after `completedAtMs` (at once when that time
 * is past). One fiber in `scope` works through the runs in time order, so a week of finished
 * runs costs a list entry each, not a fiber each. Timing is on the Effect clock.
 */
export const make = (options: { readonly workDir: string; readonly delayMs: number; readonly scope: Scope.Scope }) =>
  Effect.gen(function*() {
    /** Runs to remove, the earliest first. */
    const due: Array<{ readonly atMs: number; readonly run: Collectable }> = []
    let wake = yield* Deferred.make<void>()
    yield* Effect.gen(function*() {
      while (true) {
        const head = due[0]
        const now = yield* Clock.currentTimeMillis
        if (head !== undefined && head.atMs <= now) {
          due.shift()
          yield* collect(options.workDir, head.run)
          continue
        }
        // Until the earliest is due, or an earlier one is scheduled.
        const waiting = Deferred.await(wake)
        yield* head === undefined ? waiting : Effect.raceFirst(Effect.sleep(head.atMs - now), waiting)
        if (Deferred.isDoneUnsafe(wake)) wake = yield* Deferred.make<void>()
      }
    }).pipe(Effect.forkIn(options.scope))
    return {
      schedule: (run: Collectable, completedAtMs: number, _nowMs: number) =>
        Effect.sync(() => {
          const atMs = completedAtMs + options.delayMs
          // Nearly always the latest: runs complete in time order, with the same delay.
          let index = due.length
          while (index > 0 && due[index - 1]!.atMs > atMs) index--
          due.splice(index, 0, { atMs, run })
          if (index === 0) Deferred.doneUnsafe(wake, Effect.void)
        }),
      /** Runs waiting for their removal. */
      pending: () => due.length
    }
  })
