/**
 * `berth agent` as a child process (the way an operator runs it), the processes of its tasks, and
 * a scripted framework that acknowledges only what a test lets it: what the agent recovery tests
 * need to kill an agent at a precise moment and look at what survives.
 */
import { TaskStates, v1 } from "@berth/proto"
import { SchedulerSession } from "@berth/sdk-scheduler"
import { Context, Deferred, Effect, Layer, Queue, Scope, Stream } from "effect"
import { type ChildProcess, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { alive } from "./processes.ts"

const berth = fileURLToPath(new URL("../../packages/cluster-core/dist/bin/berth.js", import.meta.url))

export interface AgentProcess {
  readonly child: ChildProcess
  /** The agent id, once it printed that it registered. */
  readonly registered: Effect.Effect<string>
  /** Waits for the process to exit; returns its exit code (null after a signal). */
  readonly exited: Effect.Effect<number | null>
  /** Everything it wrote so far (stdout and stderr). */
  readonly output: () => string
}

/** `berth agent` on `workDir`, SIGKILLed when the scope closes if it still runs. */
export const startAgent = (
  master: string,
  workDir: string,
  args: ReadonlyArray<string> = []
): Effect.Effect<AgentProcess, never, Scope.Scope> =>
  Effect.gen(function*() {
    const child = yield* Effect.acquireRelease(
      Effect.sync(() =>
        spawn(
          process.execPath,
          [berth, "agent", "--master", master, "--work-dir", workDir, "--resources", "cpus:4;mem:4096;disk:4096", ...args],
          { stdio: ["ignore", "pipe", "pipe"] }
        )
      ),
      (child) => Effect.sync(() => child.exitCode === null && child.signalCode === null && child.kill("SIGKILL"))
    )
    let output = ""
    const registered = yield* Deferred.make<string>()
    const onData = (chunk: Buffer) => {
      output += chunk.toString("utf8")
      const match = /berth agent (\S+) registered/.exec(output)
      if (match !== null) Deferred.doneUnsafe(registered, Effect.succeed(match[1]!))
    }
    child.stdout!.on("data", onData)
    child.stderr!.on("data", onData)
    const exited = Effect.callback<number | null>((resume) => {
      if (child.exitCode !== null || child.signalCode !== null) return resume(Effect.succeed(child.exitCode))
      child.once("exit", (code) => resume(Effect.succeed(code)))
    })
    return {
      child,
      registered: Deferred.await(registered).pipe(
        Effect.timeoutOrElse({ duration: "20 seconds", orElse: () => Effect.die(new Error(`the agent did not register:\n${output}`)) })
      ),
      exited,
      output: () => output
    }
  })

/** SIGKILLs the agent and waits until it is gone. */
export const killAgent = (agent: AgentProcess, signal: NodeJS.Signals = "SIGKILL") =>
  Effect.suspend(() => {
    agent.child.kill(signal)
    return agent.exited
  })

/**
 * SIGKILLs every process group a task of `workDir` leads: the task wrappers are found by their
 * command line, which names their run's checkpoint under `<workDir>/meta/`.
 */
export const killTasks = (workDir: string): number => {
  const marker = `${path.resolve(workDir)}/meta/`
  let killed = 0
  for (const entry of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue
    try {
      if (!fs.readFileSync(`/proc/${entry}/cmdline`, "utf8").includes(marker)) continue
      process.kill(-Number(entry), "SIGKILL")
      killed++
    } catch {
      // Gone meanwhile, or not a group leader.
    }
  }
  return killed
}

/** A temp work dir whose task processes are killed, and which is removed, when the scope closes. */
export const workDir = (prefix: string) =>
  Effect.acquireRelease(
    Effect.sync(() => fs.mkdtempSync(path.join(fs.realpathSync(process.env.TMPDIR ?? "/tmp"), prefix))),
    (dir) =>
      Effect.sync(() => {
        killTasks(dir)
        fs.rmSync(dir, { recursive: true, force: true })
      })
  )

/** Polls `predicate` (real time) until it holds; dies with `what` after `ms`. */
export const waitUntil = (what: string, predicate: () => boolean, ms = 15_000) =>
  Effect.gen(function*() {
    const deadline = Date.now() + ms
    while (!predicate()) {
      if (Date.now() > deadline) return yield* Effect.die(new Error(`timed out waiting for ${what}`))
      yield* Effect.sleep("25 millis")
    }
  })

export const sandbox = (dir: string, frameworkId: string, taskId: string) =>
  path.join(dir, "frameworks", frameworkId, "executors", taskId, "runs", "latest")

/** The pid a task wrote with `echo $$ > pid`, once it has. */
export const taskPid = (dir: string, frameworkId: string, taskId: string) =>
  Effect.gen(function*() {
    const file = path.join(sandbox(dir, frameworkId, taskId), "pid")
    yield* waitUntil(`the pid of ${taskId}`, () => fs.existsSync(file) && fs.readFileSync(file, "utf8").endsWith("\n"))
    return Number(fs.readFileSync(file, "utf8"))
  })

export { alive }

export const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString("hex")

export interface ScriptedFramework {
  readonly session: SchedulerSession.Service
  readonly frameworkId: string
  readonly nextOffer: Effect.Effect<v1.Offer>
  /** Every status update received, in arrival order (duplicates included). */
  readonly updates: ReadonlyArray<v1.TaskStatus>
  /** Waits until an update matching `match` arrived (looking back first) and returns it. */
  readonly await: (description: string, match: (status: v1.TaskStatus) => boolean) => Effect.Effect<v1.TaskStatus>
  /** Acknowledges updates from now on only while `policy` says so (default: all of them). */
  readonly setAckPolicy: (policy: (status: v1.TaskStatus) => boolean) => void
  /** Acknowledges one update now. */
  readonly acknowledge: (status: v1.TaskStatus) => Effect.Effect<void>
  /** The states a task went through, each update counted once (by uuid), in arrival order. */
  readonly states: (taskId: string) => Array<string>
}

/** A framework whose acknowledgements the test controls. */
export const openFramework = (
  master: string,
  name = "recovery-test",
  roles?: ReadonlyArray<string>
): Effect.Effect<ScriptedFramework, unknown, Scope.Scope> =>
  Effect.gen(function*() {
    const context = yield* Layer.build(
      SchedulerSession.layer({ master, framework: { name, failoverTimeoutSeconds: 3600, ...(roles === undefined ? {} : { roles }) } })
    )
    const session = Context.get(context, SchedulerSession.SchedulerSession)
    const offers = yield* Queue.unbounded<v1.Offer>()
    const rescinded = new Set<string>()
    const nextOffer: Effect.Effect<v1.Offer> = Effect.flatMap(Queue.take(offers), (offer) =>
      rescinded.has(offer.offerId) ? nextOffer : Effect.succeed(offer))
    const updates: Array<v1.TaskStatus> = []
    let policy: (status: v1.TaskStatus) => boolean = () => true
    const waiters: Array<{ match: (s: v1.TaskStatus) => boolean; done: Deferred.Deferred<v1.TaskStatus> }> = []
    yield* session.events.pipe(
      Stream.runForEach((event) =>
        Effect.gen(function*() {
          if (event.$case === "offers") for (const offer of event.value.offers) Queue.offerUnsafe(offers, offer)
          if (event.$case === "rescind") for (const id of event.value.offerIds) rescinded.add(id)
          if (event.$case === "subscribed") for (const offer of yield* Queue.clear(offers)) rescinded.add(offer.offerId)
          if (event.$case === "update") {
            for (const status of event.value.statuses) {
              updates.push(status)
              if (status.uuid.length > 0 && policy(status)) yield* session.acknowledge(status)
              for (const waiter of waiters) if (waiter.match(status)) Deferred.doneUnsafe(waiter.done, Effect.succeed(status))
            }
          }
        })
      ),
      Effect.forkScoped
    )
    const frameworkId = yield* session.frameworkId
    const awaitUpdate = (description: string, match: (status: v1.TaskStatus) => boolean) =>
      Effect.gen(function*() {
        const done = yield* Deferred.make<v1.TaskStatus>()
        waiters.push({ match, done })
        const seen = updates.find(match)
        return seen ?? (yield* Deferred.await(done).pipe(
          Effect.timeoutOrElse({
            duration: "20 seconds",
            orElse: () => Effect.die(new Error(`timed out waiting for ${description}`))
          })
        ))
      })
    const states = (taskId: string) => {
      const seen = new Set<string>()
      const out: Array<string> = []
      for (const status of updates) {
        if (status.taskId !== taskId || seen.has(hex(status.uuid))) continue
        seen.add(hex(status.uuid))
        out.push(TaskStates.name(status.state))
      }
      return out
    }
    return {
      session,
      frameworkId,
      nextOffer,
      updates,
      await: awaitUpdate,
      setAckPolicy: (p) => (policy = p),
      acknowledge: (status) => Effect.orDie(session.acknowledge(status)),
      states
    }
  })

/** A LAUNCH operation. */
export const launch = (tasks: ReadonlyArray<v1.TaskInfo>): v1.Operation => ({
  operationId: "",
  kind: { $case: "launch", value: { taskInfos: [...tasks] } }
})
