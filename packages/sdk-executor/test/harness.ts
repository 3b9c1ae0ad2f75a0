import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { expect } from "@effect/vitest"
import { Effect, Fiber, Queue } from "effect"
import { TaskStates, v1 } from "@berth/proto"
import { CommandExecutor, DefaultExecutor, ExecutorSession } from "@berth/sdk-executor"

export const ids = { frameworkId: "fw-1", executorId: "ex-1", agentId: "ag-1" } as const

/** A fresh sandbox directory, removed with everything in it when the scope closes. */
export const tempDir = Effect.acquireRelease(
  Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "berth-executor-"))),
  (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
)

/** Real-time pause that works whether or not the test clock is installed. */
const pause = (ms: number) => Effect.promise(() => new Promise<void>((resolve) => setTimeout(resolve, ms)))

/** Polls `predicate` in real time; dies after `ms` so a broken behaviour fails instead of hanging. */
export const waitFor = (what: string, predicate: () => boolean, ms = 5_000): Effect.Effect<void> =>
  Effect.gen(function*() {
    const deadline = performance.now() + ms
    while (!predicate()) {
      if (performance.now() > deadline) return yield* Effect.die(new Error(`timed out waiting for ${what}`))
      yield* pause(10)
    }
  })

/** Live (not zombie) processes whose process group is `pgid`, read from /proc. */
export const groupMembers = (pgid: number): Array<number> => {
  const members: Array<number> = []
  for (const entry of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue
    let stat: string
    try {
      stat = fs.readFileSync(`/proc/${entry}/stat`, "utf8")
    } catch {
      continue
    }
    // After "pid (comm) " come: state ppid pgrp ...; comm may hold spaces, hence lastIndexOf.
    const [state, , pgrp] = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
    if (Number(pgrp) === pgid && state !== "Z" && state !== "X") members.push(Number(entry))
  }
  return members
}

/** The pid a task wrote with `echo $$ > pid` (its shell, the leader of its process group). */
export const taskPid = (sandbox: string): Effect.Effect<number> =>
  Effect.gen(function*() {
    const file = path.join(sandbox, "pid")
    yield* waitFor("the task's pid file", () => fs.existsSync(file) && fs.readFileSync(file, "utf8").endsWith("\n"))
    return Number(fs.readFileSync(file, "utf8").trim())
  })

export const shellTask = (taskId: string, script: string, extra: Partial<v1.TaskInfo> = {}): v1.TaskInfo =>
  v1.TaskInfo.create({ taskId, name: taskId, command: { shell: true, value: script }, ...extra })

/** A command executor on an in-process session in a fresh sandbox, with every status it reports. */
export const startExecutor = (options: {
  readonly env?: Record<string, string>
  readonly defaultGracePeriodSeconds?: number
  readonly fetcher?: CommandExecutor.FetcherOptions
  readonly checkpoint?: CommandExecutor.CheckpointOptions
  readonly recover?: CommandExecutor.Recovered
  /** Run in this sandbox (another executor's, to take over its task) instead of a fresh one. */
  readonly sandbox?: string
} = {}) =>
  Effect.gen(function*() {
    const { sandbox: given, ...runOptions } = options
    const sandbox = given ?? (yield* tempDir)
    const updates = yield* Queue.unbounded<v1.TaskStatus>()
    const statuses: Array<v1.TaskStatus> = []
    const inProcess = yield* ExecutorSession.makeInProcess({
      ...ids,
      onUpdate: (status) =>
        Effect.sync(() => statuses.push(status)).pipe(Effect.andThen(Queue.offer(updates, status)), Effect.asVoid)
    })
    const fiber = yield* CommandExecutor.run({ sandbox, ...runOptions }).pipe(
      Effect.provide(ExecutorSession.layerInProcess(inProcess)),
      Effect.forkChild
    )
    /** The next status; dies if none comes within `ms` of real time. */
    const next = (ms = 10_000) =>
      Effect.raceFirst(
        Queue.take(updates),
        pause(ms).pipe(Effect.andThen(Effect.die(new Error(`no status within ${ms} ms`))))
      )
    /** Waits for `run` to return, in real time. */
    const done = (ms = 10_000) =>
      Effect.gen(function*() {
        yield* waitFor("run to return", () => fiber.pollUnsafe() !== undefined, ms)
        return yield* Fiber.await(fiber)
      })
    const launch = (task: v1.TaskInfo) => inProcess.send({ $case: "launch", value: { task } })
    const kill = (taskId: string, gracePeriodSeconds?: number) =>
      inProcess.send({
        $case: "kill",
        value: { taskId, reason: 0, ...(gracePeriodSeconds === undefined ? {} : { killPolicy: { gracePeriodSeconds } }) }
      })
    /** Waits, in real time, until `count` statuses were reported; returns the last of them. */
    const nth = (count: number, ms = 10_000) =>
      waitFor(`status #${count} (have ${states(statuses).join(", ")})`, () => statuses.length >= count, ms).pipe(
        Effect.map(() => statuses[count - 1]!)
      )
    return { sandbox, inProcess, fiber, statuses, next, nth, done, launch, kill }
  })

/** Asserts what every status of the executor carries, whatever its state. */
export const expectWellFormed = (statuses: ReadonlyArray<v1.TaskStatus>, taskId: string, from: number, to: number) => {
  expect(statuses.length).toBeGreaterThan(0)
  const uuids = new Set<string>()
  let previous = from
  for (const status of statuses) {
    expect(status.taskId).toBe(taskId)
    expect(status.executorId).toBe(ids.executorId)
    expect(status.agentId).toBe(ids.agentId)
    expect(status.source).toBe(v1.TaskStatus_Source.EXECUTOR)
    expect(status.uuid.length).toBe(16)
    uuids.add(Buffer.from(status.uuid).toString("hex"))
    expect(status.timestampMs).toBeGreaterThanOrEqual(previous)
    expect(status.timestampMs).toBeLessThanOrEqual(to)
    previous = status.timestampMs
  }
  expect(uuids.size).toBe(statuses.length)
}

/** The state names of `statuses`, e.g. ["STARTING", "RUNNING", "FINISHED"]. */
export const states = (statuses: ReadonlyArray<v1.TaskStatus>): Array<string> =>
  statuses.map((status) => TaskStates.name(status.state))

/**
 * A default executor on an in-process session in a fresh sandbox, with every status it reports
 * and helpers to launch groups, kill, wait for states and read pid files the tasks write.
 */
export const startDefaultExecutor = (options: Omit<DefaultExecutor.RunOptions, "sandbox"> = {}) =>
  Effect.gen(function*() {
    const sandbox = yield* tempDir
    const statuses: Array<v1.TaskStatus> = []
    const inProcess = yield* ExecutorSession.makeInProcess({
      ...ids,
      onUpdate: (status) => Effect.sync(() => void statuses.push(status))
    })
    const fiber = yield* DefaultExecutor.run({ sandbox, ...options }).pipe(
      Effect.provide(ExecutorSession.layerInProcess(inProcess)),
      Effect.forkChild
    )
    const launch = (tasks: ReadonlyArray<v1.TaskInfo>) =>
      inProcess.send({ $case: "launchGroup", value: { taskGroup: { tasks: [...tasks] } } })
    const kill = (taskId: string) =>
      inProcess.send({ $case: "kill", value: { taskId, reason: v1.TaskStatus_Reason.KILLED_BY_SCHEDULER, killPolicy: { gracePeriodSeconds: 1 } } })
    const of = (taskId: string) => statuses.filter((s) => s.taskId === taskId).map((s) => TaskStates.name(s.state))
    const last = (taskId: string) => statuses.findLast((s) => s.taskId === taskId)!
    const reached = (taskId: string, state: v1.TaskState, ms = 15_000) =>
      waitFor(
        `${taskId} ${TaskStates.name(state)} (have ${of(taskId).join(", ")})`,
        () => statuses.some((s) => s.taskId === taskId && s.state === state),
        ms
      )
    const running = () => fiber.pollUnsafe() === undefined
    const done = (ms = 15_000) =>
      Effect.gen(function*() {
        yield* waitFor("run to return", () => !running(), ms)
        return yield* Fiber.await(fiber)
      })
    const pidOf = (name: string) =>
      Effect.gen(function*() {
        const file = path.join(sandbox, name)
        yield* waitFor(name, () => fs.existsSync(file) && fs.readFileSync(file, "utf8").endsWith("\n"), 15_000)
        return Number(fs.readFileSync(file, "utf8").trim())
      })
    return { sandbox, inProcess, fiber, statuses, launch, kill, of, last, reached, running, done, pidOf }
  })
