/**
 * The `canary` deploy strategy on a real in-process cluster (real gRPC, real agents spawning the
 * pods' processes, a SQLite state file): the first instance rolls alone, the plan waits for the
 * operator, the operator proceeds through the operator HTTP API, the rest roll one at a time.
 * Shown for the first install, for a config update, and across scheduler restarts (the pause is
 * stored, not held in memory).
 *
 * "One at a time" is observed on the task lifecycle's change stream (every launch, status and
 * kill request, in order), never by timing: at every change, at most one instance is not serving
 * (its latest task is not RUNNING and ready, or is being killed), and every launch happens while
 * every other instance that has a task is serving.
 */
import { describe, expect, it } from "@effect/vitest"
import type { v1 } from "@berth/proto"
import { OperatorHttp, ServiceScheduler, ServiceSpec, TaskLifecycle } from "@berth/sdk-scheduler"
import { StateStore } from "@berth/storage"
import { TestCluster } from "@berth/testkit"
import { Context, Effect, Exit, Layer, Option, References, Scope, Stream } from "effect"
import * as path from "node:path"

// ---------------------------------------------------------------------------------------------
// The service: three instances of one pod, rolled by the canary strategy. The server becomes
// ready a moment after it starts (a readiness check gates every step).

const specOf = (version: string) => ({
  name: "canary-kv",
  role: "canary",
  pods: {
    kv: {
      count: 3,
      strategy: "canary",
      tasks: {
        server: {
          goal: "RUNNING",
          cpus: 0.1,
          mem: 32,
          env: { VERSION: version },
          cmd: "sleep 0.3 && touch ready && exec sleep 100000",
          readiness: { cmd: "test -f ready", intervalSeconds: 0.2 }
        }
      }
    }
  }
})
const fingerprintOf = (version: string) => ServiceSpec.podFingerprint(ServiceSpec.decodeSync(specOf(version)), "kv")
const INSTANCES = ["kv-0", "kv-1", "kv-2"]

// ---------------------------------------------------------------------------------------------
// Helpers

interface Reply {
  readonly status: number
  readonly body: any
}

const call = (base: string, method: string, route: string, body?: unknown) =>
  Effect.promise(async (): Promise<Reply> => {
    const res = await fetch(`${base}${route}`, {
      method,
      ...(body === undefined ? {} : { body: JSON.stringify(body), headers: { "content-type": "application/json" } })
    })
    const text = await res.text()
    return { status: res.status, body: text === "" ? undefined : JSON.parse(text) }
  })

let diagnose: Effect.Effect<unknown, any> = Effect.void
const waitUntil = <A>(what: string, check: Effect.Effect<A | undefined, any>, timeoutMs = 120_000) =>
  Effect.gen(function*() {
    while (true) {
      const value = yield* check
      if (value !== undefined) return value
      yield* Effect.sleep("150 millis")
    }
  }).pipe(Effect.timeoutOrElse({
    duration: timeoutMs,
    orElse: () =>
      Effect.flatMap(Effect.orElseSucceed(diagnose, () => "(diagnosis failed)"), (d) =>
        Effect.die(new Error(`timed out waiting for ${what}\n${JSON.stringify(d, null, 1)}`)))
  }))

/**
 * Checks `invariant` repeatedly for a while (many plan evaluations at the default 250 ms tick):
 * how long is not asserted, only that the invariant held every time it was looked at.
 */
const holds = (invariant: Effect.Effect<void, any>, samples = 20) =>
  Effect.gen(function*() {
    for (let i = 0; i < samples; i++) {
      yield* invariant
      yield* Effect.sleep("200 millis")
    }
  })

/** The master's tasks of an instance (every attempt the master knows of, whatever its state). */
const masterTasksOf = (state: v1.GetStateResponse, instance: string) =>
  state.tasks.filter((t) => t.info?.taskId.startsWith(`${instance}.`) === true)
const configLabel = (task: v1.Task) => task.info?.labels?.labels.find((l) => l.key === "berth.config")?.value

/**
 * The scheduler (session, offers, task lifecycle, service runtime) with its operator API, on the
 * SQLite file `state`, in its own scope: closing it stops the scheduler as a crash would (the
 * tasks keep running, the file stays).
 */
const startScheduler = (cluster: TestCluster.TestCluster, state: string, version: string) =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    const live = OperatorHttp.layer().pipe(
      Layer.provideMerge(ServiceScheduler.layerStack({ spec: specOf(version), master: cluster.master })),
      Layer.provide(StateStore.layerSqlite({ path: state }))
    )
    const context = yield* Layer.build(live).pipe(Scope.provide(scope))
    // layerStack's context also holds the task lifecycle it runs the service with (it is merged
    // in, though its type names only the runtime): its change stream is what is observed here.
    const tasks = Context.getOption(context as Context.Context<unknown>, TaskLifecycle.TaskLifecycle)
    if (Option.isNone(tasks)) return yield* Effect.die(new Error("layerStack no longer provides the TaskLifecycle"))
    const recorder = yield* record(tasks.value).pipe(Scope.provide(scope))
    return {
      service: Context.get(context, ServiceScheduler.ServiceScheduler),
      api: Context.get(context, OperatorHttp.OperatorHttp).url,
      tasks: tasks.value,
      recorder,
      stop: Scope.close(scope, Exit.void)
    }
  })

interface Recorder {
  /** Task ids in launch order. */
  readonly launches: Array<string>
  /** Every moment two instances were not serving at once, and every launch made meanwhile. */
  readonly violations: Array<string>
  /** The most instances not serving at once, over every change seen. */
  maxNotServing: number
  changes: number
}

/** Follows the lifecycle's changes (from the records it already holds) and checks the rollout is serial. */
const record = (tasks: TaskLifecycle.Service) =>
  Effect.gen(function*() {
    const latest = new Map<string, TaskLifecycle.TaskRecord>()
    const recorder: Recorder = { launches: [], violations: [], maxNotServing: 0, changes: 0 }
    const main = (t: TaskLifecycle.TaskRecord) => INSTANCES.includes(t.requirementId)
    const notServing = () => {
      const byInstance = new Map<string, TaskLifecycle.TaskRecord>()
      for (const t of latest.values()) {
        if (!main(t)) continue
        const other = byInstance.get(t.requirementId)
        if (other === undefined || t.attempt > other.attempt) byInstance.set(t.requirementId, t)
      }
      return [...byInstance.values()]
        .filter((t) => !(t.state === "RUNNING" && t.ready === true && t.killRequested !== true))
        .map((t) => `${t.taskId}:${t.state}${t.ready === true ? "+ready" : ""}${t.killRequested === true ? "+killing" : ""}`)
    }
    const onChange = (change: TaskLifecycle.Change) =>
      Effect.sync(() => {
        const r = change.record
        if (!main(r)) return
        recorder.changes++
        latest.set(r.taskId, r)
        const down = notServing()
        if (change.previous === undefined) {
          recorder.launches.push(r.taskId)
          const others = down.filter((d) => !d.startsWith(`${r.requirementId}.`))
          if (others.length > 0) recorder.violations.push(`${r.taskId} launched while ${others.join(", ")} not serving`)
        }
        recorder.maxNotServing = Math.max(recorder.maxNotServing, down.length)
        if (down.length > 1) recorder.violations.push(`not serving at once: ${down.join(", ")}`)
      })
    yield* tasks.changes.pipe(Stream.runForEach(onChange), Effect.forkScoped({ startImmediately: true }))
    // Subscribed: what the lifecycle already holds (after a restart) is the starting point.
    for (const t of yield* tasks.tasks) if (main(t) && !latest.has(t.taskId)) latest.set(t.taskId, t)
    return recorder
  })

type Scheduler = Effect.Success<ReturnType<typeof startScheduler>>

const deployView = (s: Scheduler) => Effect.map(call(s.api, "GET", "/v1/plans/deploy"), (r) => r.body)

/** The deploy plan, seen over HTTP, waiting at the canary: kv-0 done, nothing else may run. */
const awaitCanaryPause = (s: Scheduler) =>
  waitUntil("the deploy plan waiting at the canary", Effect.map(deployView(s), (v) => {
    const phase = v?.phases?.[0]
    return phase?.status === "WAITING" && phase.steps[0].status === "COMPLETE" ? v : undefined
  }))

const expectCanaryPause = (view: any) => {
  expect(view.status).toBe("WAITING")
  expect(view.candidates).toEqual([])
  const phase = view.phases[0]
  expect(phase.name).toBe("kv")
  expect(phase.strategy).toBe("canary")
  expect(phase.status).toBe("WAITING")
  expect(phase.message).toBe("canary kv-0 is complete: resume the phase to proceed with the other steps")
  expect(phase.steps.map((s: any) => [s.name, s.status])).toEqual([["kv-0", "COMPLETE"], ["kv-1", "PENDING"], ["kv-2", "PENDING"]])
}

const readyPods = (s: Scheduler) => Effect.map(s.service.pods, (ps) => ps.filter((p) => p.state === "RUNNING" && p.ready === true))

const awaitDeployComplete = (s: Scheduler) =>
  waitUntil("the deploy plan COMPLETE with three ready pods", Effect.gen(function*() {
    const v = yield* s.service.plan("deploy")
    const ready = yield* readyPods(s)
    return v.status === "COMPLETE" && ready.length === 3 && ready.every((p) => p.upToDate) ? ready : undefined
  }))

// ---------------------------------------------------------------------------------------------

describe("canary deploy strategy on a real cluster", () => {
  it.live("install and config update: the canary rolls alone, the plan waits for the operator, the rest roll one at a time", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ agents: 3, agentResources: "cpus:1;mem:512;disk:256" })
      const state = path.join(cluster.workDir, "canary.db")
      const s = yield* startScheduler(cluster, state, "1")
      diagnose = Effect.all({ pods: s.service.pods, plans: s.service.plans, recorder: Effect.succeed(s.recorder) })
      const v1Fingerprint = fingerprintOf("1")
      const v2Fingerprint = fingerprintOf("2")

      // 1. Install: kv-0 alone is launched and becomes RUNNING and ready; the plan waits.
      expectCanaryPause(yield* awaitCanaryPause(s))
      const canary = (yield* readyPods(s)).map((p) => p.instance)
      expect(canary).toEqual(["kv-0"])
      // It stays so: the master never hears of kv-1 or kv-2, the lifecycle launches nothing.
      yield* holds(Effect.gen(function*() {
        const master = yield* cluster.operator.state
        expect(masterTasksOf(master, "kv-1")).toEqual([])
        expect(masterTasksOf(master, "kv-2")).toEqual([])
        expect(masterTasksOf(master, "kv-0").map((t) => t.info!.taskId)).toEqual(["kv-0.1"])
        expect((yield* s.tasks.tasks).map((t) => t.taskId)).toEqual(["kv-0.1"])
        expectCanaryPause(yield* deployView(s))
      }))

      // The operator proceeds: resume the canary phase over HTTP.
      const resumed = yield* call(s.api, "POST", "/v1/plans/deploy/resume", { phase: "kv" })
      expect(resumed.status).toBe(200)
      expect(resumed.body.phases[0].message).toBeUndefined()
      expect(resumed.body.candidates).toEqual([{ phase: "kv", step: "kv-1" }])
      const installed = yield* awaitDeployComplete(s)
      expect(installed.map((p) => p.instance)).toEqual(INSTANCES)
      // One at a time, in order, each launched once the previous one was ready.
      expect(s.recorder.launches).toEqual(["kv-0.1", "kv-1.1", "kv-2.1"])
      expect(s.recorder.violations).toEqual([])
      expect(s.recorder.maxNotServing).toBe(1)
      const master1 = yield* cluster.operator.state
      expect(master1.tasks.map((t) => t.info!.taskId).sort()).toEqual(["kv-0.1", "kv-1.1", "kv-2.1"])
      for (const t of master1.tasks) expect(configLabel(t)).toBe(v1Fingerprint)

      // 2. A config update (a new VERSION in the server's env): only kv-0 is relaunched with
      //    the new configuration, then the plan waits again; kv-1 and kv-2 keep the old one.
      const before = new Map((yield* s.service.pods).map((p) => [p.instance, p.taskId]))
      yield* s.service.update(specOf("2"))
      expectCanaryPause(yield* awaitCanaryPause(s))
      const kv0 = yield* waitUntil("kv-0 on the new config", Effect.map(readyPods(s), (ps) => ps.find((p) => p.instance === "kv-0" && p.upToDate)))
      expect(kv0.taskId).toBe("kv-0.2")
      const oldConfig = Effect.gen(function*() {
        const pods = yield* s.service.pods
        for (const instance of ["kv-1", "kv-2"]) {
          const p = pods.find((x) => x.instance === instance)!
          expect(p).toMatchObject({ taskId: before.get(instance), state: "RUNNING", ready: true, upToDate: false })
        }
        const master = yield* cluster.operator.state
        const running = master.tasks.filter((t) => t.state === 3 /* RUNNING */)
        expect(running.map((t) => [t.info!.taskId, configLabel(t)]).sort()).toEqual([
          ["kv-0.2", v2Fingerprint],
          ["kv-1.1", v1Fingerprint],
          ["kv-2.1", v1Fingerprint]
        ])
        expect(masterTasksOf(master, "kv-1").map((t) => t.info!.taskId)).toEqual(["kv-1.1"])
        expect(masterTasksOf(master, "kv-2").map((t) => t.info!.taskId)).toEqual(["kv-2.1"])
        expectCanaryPause(yield* deployView(s))
      })
      yield* holds(oldConfig)
      expect(s.recorder.launches).toEqual(["kv-0.1", "kv-1.1", "kv-2.1", "kv-0.2"])

      // The operator proceeds, this time resuming the whole plan.
      const resumed2 = yield* call(s.api, "POST", "/v1/plans/deploy/resume")
      expect(resumed2.status).toBe(200)
      expect(resumed2.body.candidates).toEqual([{ phase: "kv", step: "kv-1" }])
      const updated = yield* awaitDeployComplete(s)
      expect(updated.map((p) => p.taskId)).toEqual(["kv-0.2", "kv-1.2", "kv-2.2"])
      expect(s.recorder.launches).toEqual(["kv-0.1", "kv-1.1", "kv-2.1", "kv-0.2", "kv-1.2", "kv-2.2"])
      expect(s.recorder.violations).toEqual([])
      expect(s.recorder.maxNotServing).toBe(1)
      const master2 = yield* cluster.operator.state
      const running2 = master2.tasks.filter((t) => t.state === 3 /* RUNNING */)
      expect(running2.map((t) => [t.info!.taskId, configLabel(t)]).sort()).toEqual([
        ["kv-0.2", v2Fingerprint],
        ["kv-1.2", v2Fingerprint],
        ["kv-2.2", v2Fingerprint]
      ])
      const env = running2.map((t) => t.info!.command!.environment.find((e) => e.name === "VERSION")?.value)
      expect(env).toEqual(["2", "2", "2"])
      yield* s.stop
    }).pipe(Effect.scoped, Effect.provideService(References.MinimumLogLevel, "Warn")), 300_000)

  it.live("the canary pause is stored: a restarted scheduler still waits, launches nothing, and completes once resumed", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ agents: 3, agentResources: "cpus:1;mem:512;disk:256" })
      const state = path.join(cluster.workDir, "canary.db")
      const v1Fingerprint = fingerprintOf("1")
      const v2Fingerprint = fingerprintOf("2")

      // Install, stopped at the canary pause.
      const first = yield* startScheduler(cluster, state, "1")
      diagnose = Effect.all({ pods: first.service.pods, plans: first.service.plans })
      expectCanaryPause(yield* awaitCanaryPause(first))
      const frameworkId = (yield* first.service.state).frameworkId
      expect(frameworkId).toMatch(/./)
      yield* first.stop

      // A new scheduler on the same file: still paused, nothing else launched.
      const second = yield* startScheduler(cluster, state, "1")
      diagnose = Effect.all({ pods: second.service.pods, plans: second.service.plans, recorder: Effect.succeed(second.recorder) })
      yield* waitUntil("kv-0 reconciled RUNNING and ready", Effect.map(readyPods(second), (ps) => (ps.some((p) => p.instance === "kv-0") ? true : undefined)))
      expectCanaryPause(yield* awaitCanaryPause(second))
      yield* holds(Effect.gen(function*() {
        const master = yield* cluster.operator.state
        expect(master.tasks.map((t) => [t.info!.taskId, t.state])).toEqual([["kv-0.1", 3 /* RUNNING */]])
        expectCanaryPause(yield* deployView(second))
      }))
      expect(second.recorder.launches).toEqual([])

      // Resumed on the new scheduler: the rest roll, one at a time, under the same framework.
      expect((yield* call(second.api, "POST", "/v1/plans/deploy/resume", { phase: "kv" })).status).toBe(200)
      yield* awaitDeployComplete(second)
      expect(second.recorder.launches).toEqual(["kv-1.1", "kv-2.1"])
      expect(second.recorder.violations).toEqual([])
      const installed = yield* cluster.operator.state
      expect(installed.tasks.map((t) => t.info!.taskId).sort()).toEqual(["kv-0.1", "kv-1.1", "kv-2.1"])
      expect(installed.frameworks.map((f) => f.info!.frameworkId)).toEqual([frameworkId])

      // The same across a restart in the middle of a config update: kv-0 rolled, kv-1 and kv-2
      // on the old config, and they stay there with the new scheduler until resumed.
      yield* second.service.update(specOf("2"))
      expectCanaryPause(yield* awaitCanaryPause(second))
      yield* waitUntil("kv-0 on the new config", Effect.map(readyPods(second), (ps) => ps.find((p) => p.instance === "kv-0" && p.upToDate)))
      yield* second.stop

      const third = yield* startScheduler(cluster, state, "2")
      diagnose = Effect.all({ pods: third.service.pods, plans: third.service.plans, recorder: Effect.succeed(third.recorder) })
      yield* waitUntil("three pods reconciled RUNNING and ready", Effect.map(readyPods(third), (ps) => (ps.length === 3 ? true : undefined)))
      expectCanaryPause(yield* awaitCanaryPause(third))
      const runningConfigs = Effect.map(cluster.operator.state, (master) =>
        master.tasks.filter((t) => t.state === 3 /* RUNNING */).map((t) => [t.info!.taskId, configLabel(t)]).sort())
      yield* holds(Effect.gen(function*() {
        expect(yield* runningConfigs).toEqual([["kv-0.2", v2Fingerprint], ["kv-1.1", v1Fingerprint], ["kv-2.1", v1Fingerprint]])
        const pods = yield* third.service.pods
        expect(pods.map((p) => [p.instance, p.upToDate])).toEqual([["kv-0", true], ["kv-1", false], ["kv-2", false]])
        expectCanaryPause(yield* deployView(third))
      }))
      expect(third.recorder.launches).toEqual([])

      expect((yield* call(third.api, "POST", "/v1/plans/deploy/resume")).status).toBe(200)
      yield* awaitDeployComplete(third)
      expect(third.recorder.launches).toEqual(["kv-1.2", "kv-2.2"])
      expect(third.recorder.violations).toEqual([])
      expect(yield* runningConfigs).toEqual([["kv-0.2", v2Fingerprint], ["kv-1.2", v2Fingerprint], ["kv-2.2", v2Fingerprint]])
      expect((yield* cluster.operator.state).frameworks.map((f) => f.info!.frameworkId)).toEqual([frameworkId])
      yield* third.stop
    }).pipe(Effect.scoped, Effect.provideService(References.MinimumLogLevel, "Warn")), 300_000)
})
