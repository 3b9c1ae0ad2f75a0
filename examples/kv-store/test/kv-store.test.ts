import { describe, expect, it } from "@effect/vitest"
import { v1 } from "@berth/proto"
import { ServiceScheduler } from "@berth/sdk-scheduler"
import { TestCluster } from "@berth/testkit"
import { Context, Effect, Exit, Layer, References, Scope } from "effect"
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import * as KvStore from "../src/kvStore.ts"

const main = fileURLToPath(new URL("../dist/main.js", import.meta.url))

type Cluster = TestCluster.TestCluster

/** The kv-store scheduler, built in its own scope (closing it is a scheduler crash/stop). */
const startScheduler = (cluster: Cluster, state: string, options: { count?: number; version?: string; replaceAfterMs?: number } = {}) =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    const context = yield* Layer.build(KvStore.layer({ master: cluster.master, state, ...options })).pipe(Scope.provide(scope))
    return { service: Context.get(context, ServiceScheduler.ServiceScheduler), stop: Scope.close(scope, Exit.void) }
  })

const volumeDir = (cluster: Cluster, agentId: string, persistenceId: string) => {
  const agent = cluster.agents.find((a) => a.agentId === agentId)!
  return path.join(agent.workDir, "volumes", "roles", "kv", persistenceId)
}
const logOf = (cluster: Cluster, agentId: string, persistenceId: string) => {
  const file = path.join(volumeDir(cluster, agentId, persistenceId), "log")
  return fs.existsSync(file) ? fs.readFileSync(file, "utf8").trim().split("\n") : []
}

let diagnose: Effect.Effect<unknown, any> = Effect.void
const waitUntil = <A>(what: string, check: Effect.Effect<A | undefined, any>, timeoutMs = 60_000) =>
  Effect.gen(function*() {
    while (true) {
      const value = yield* check
      if (value !== undefined) return value
      yield* Effect.sleep("100 millis")
    }
  }).pipe(Effect.timeoutOrElse({
    duration: timeoutMs,
    orElse: () => Effect.flatMap(diagnose, (d) => Effect.die(new Error(`timed out waiting for ${what}\n${JSON.stringify(d, null, 1)}`)))
  }))

const planComplete = (service: ServiceScheduler.Service, name: string) =>
  waitUntil(`plan ${name} complete`, Effect.map(service.plan(name), (v) => (v.status === "COMPLETE" ? v : undefined)))

const running = (service: ServiceScheduler.Service) =>
  Effect.map(service.pods, (pods) => pods.filter((p) => p.state === "RUNNING" && p.ready === true))

const reservationsOf = (state: v1.GetStateResponse) =>
  state.agents.flatMap((a) => [...(a.info?.resources ?? []), ...a.allocated, ...a.offered].filter((r) => r.reservations.length > 0).map((r) => ({ agentId: a.info?.agentId ?? "", r })))

describe("examples/kv-store", () => {
  it.live("deploys 3 pods; restarts in place; replaces; rolls a config change; scales up; uninstalls leaving nothing", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ agents: 4, agentResources: "cpus:1;mem:512;disk:256" })
      const state = path.join(cluster.workDir, "kv-store.db")
      const { service } = yield* startScheduler(cluster, state)
      diagnose = Effect.all({ pods: service.pods, plans: service.plans, release: service.pendingRelease, why: Effect.forEach(["kv-0", "kv-1", "kv-2", "kv-3"], service.whyNot) })

      console.log("kv-store test: step 1")
      // 1. Deploy: three pods, one per host, each RUNNING, ready, with its volume written to.
      yield* planComplete(service, "deploy")
      const pods = yield* running(service)
      expect(pods.map((p) => p.instance).sort()).toEqual(["kv-0", "kv-1", "kv-2"])
      expect(new Set(pods.map((p) => p.agentId)).size).toBe(3)
      for (const p of pods) expect(logOf(cluster, p.agentId!, `kv-store.${p.instance}.data`)).toEqual([`instance=${p.instance} version=1 started`])

      console.log("kv-store test: step 2")
      // 2. The kv-1 server dies: restarted on the same agent, same volume, data kept.
      const kv1 = pods.find((p) => p.instance === "kv-1")!
      const pid = Number(fs.readFileSync(path.join(volumeDir(cluster, kv1.agentId!, "kv-store.kv-1.data"), "pid"), "utf8"))
      process.kill(pid, "SIGKILL")
      const restarted = yield* waitUntil("kv-1 restarted", Effect.map(running(service), (ps) => ps.find((p) => p.instance === "kv-1" && p.taskId !== kv1.taskId)))
      expect(restarted.agentId).toBe(kv1.agentId)
      expect(restarted.generation).toBe(0)
      expect(logOf(cluster, kv1.agentId!, "kv-store.kv-1.data")).toEqual(["instance=kv-1 version=1 started", "instance=kv-1 version=1 started"])

      console.log("kv-store test: step 3")
      // 3. Replace kv-1: it moves to the free agent with a new volume; the old reservation and volume are released.
      yield* service.replacePod("kv-1")
      const moved = yield* waitUntil("kv-1 replaced", Effect.map(running(service), (ps) => ps.find((p) => p.instance === "kv-1" && p.generation === 1)))
      expect(moved.agentId).not.toBe(kv1.agentId)
      expect(logOf(cluster, moved.agentId!, "kv-store.kv-1.g1.data")).toEqual(["instance=kv-1 version=1 started"])
      yield* waitUntil("the old kv-1 volume destroyed", Effect.sync(() => (fs.existsSync(volumeDir(cluster, kv1.agentId!, "kv-store.kv-1.data")) ? undefined : true)))
      yield* cluster.waitFor("the old kv-1 reservation released", (s) =>
        !reservationsOf(s).some(({ agentId, r }) => agentId === kv1.agentId))
      yield* waitUntil("nothing left to release", Effect.map(service.pendingRelease, (p) => (p.length === 0 ? true : undefined)))

      console.log("kv-store test: step 4")
      // 4. A config change (version 2) rolls one pod at a time: never two pods down at once, and
      //    each waits for the previous one's readiness. Data survives (same volumes).
      const before = yield* service.pods
      yield* service.update(KvStore.spec({ version: "2" }))
      const readyAt = new Map<string, number>()
      let maxDown = 0
      let samples = 0
      yield* waitUntil("the rolling update", Effect.gen(function*() {
        const now = Date.now()
        const ps = yield* service.pods
        samples++
        maxDown = Math.max(maxDown, ps.filter((p) => !(p.state === "RUNNING" && p.ready === true)).length)
        for (const p of ps) if (p.upToDate && p.state === "RUNNING" && p.ready === true && !readyAt.has(p.instance)) readyAt.set(p.instance, now)
        const deploy = yield* service.plan("deploy")
        return deploy.status === "COMPLETE" && readyAt.size === 3 ? true : undefined
      }))
      expect(samples).toBeGreaterThan(5)
      expect(maxDown).toBe(1)
      // In order, one after the other.
      expect([...readyAt.entries()].sort((a, b) => a[1] - b[1]).map(([i]) => i)).toEqual(["kv-0", "kv-1", "kv-2"])
      for (const p of yield* running(service)) {
        const old = before.find((b) => b.instance === p.instance)!
        expect(p.agentId).toBe(old.agentId) // updated in place, on its reservation
        const log = logOf(cluster, p.agentId!, `kv-store.${p.instance}${p.generation > 0 ? `.g${p.generation}` : ""}.data`)
        expect(log.at(-1)).toBe(`instance=${p.instance} version=2 started`)
        expect(log.length).toBeGreaterThan(1)
      }

      console.log("kv-store test: step 4b")
      // 4b. The backup plan copies each pod's data while the pods keep running: its task runs
      //     inside each pod's task group, so it reads the pod's live volume.
      const serving = (yield* running(service)).map((p) => p.taskId)
      const backups = path.join(cluster.workDir, "backups")
      yield* service.startPlan("backup", { BACKUP_DIR: backups })
      yield* planComplete(service, "backup")
      for (const p of yield* running(service)) {
        const log = logOf(cluster, p.agentId!, `kv-store.${p.instance}${p.generation > 0 ? `.g${p.generation}` : ""}.data`)
        expect(fs.readFileSync(path.join(backups, `${p.instance}.log`), "utf8").trim().split("\n")).toEqual(log)
      }
      expect((yield* running(service)).map((p) => p.taskId)).toEqual(serving)

      console.log("kv-store test: step 5")
      // 5. A refused update (a volume change, a shrink) says why and leaves the target in force.
      const refused = yield* Effect.flip(service.update({ ...KvStore.spec({ count: 2, version: "2" }), pods: { kv: { ...KvStore.spec().pods.kv!, count: 2, volumes: [{ path: "data", size: 32 }] } } }))
      expect(refused._tag).toBe("ServiceSpecError")
      expect(refused.message).toContain("pods.kv.volumes: cannot change once deployed (was data:16MB, now data:32MB)")
      expect(refused.message).toContain("pods.kv.count: cannot shrink from 3 to 2 unless allowDecommission: true")
      expect((yield* service.spec).pods.kv!.tasks.server!.env).toEqual({ VERSION: "2" })
      expect((yield* service.spec).pods.kv!.count).toBe(3)

      console.log("kv-store test: step 6")
      // 6. Scale up: a fourth pod on the fourth host; the others are untouched.
      const untouched = (yield* service.pods).map((p) => p.taskId)
      yield* service.update(KvStore.spec({ count: 4, version: "2" }))
      yield* planComplete(service, "deploy")
      const four = yield* waitUntil("four pods", Effect.map(running(service), (ps) => (ps.length === 4 ? ps : undefined)))
      expect(new Set(four.map((p) => p.agentId)).size).toBe(4)
      expect(four.filter((p) => p.instance !== "kv-3").map((p) => p.taskId)).toEqual(untouched)
      const kv3 = four.find((p) => p.instance === "kv-3")!
      expect(logOf(cluster, kv3.agentId!, "kv-store.kv-3.data")).toEqual(["instance=kv-3 version=2 started"])

      // 6b. Decommission (allowed by the new spec): kv-3 goes, its reservation and volume with it.
      const shrink = KvStore.spec({ count: 3, version: "2" })
      yield* service.update({ ...shrink, pods: { kv: { ...shrink.pods.kv!, allowDecommission: true } } })
      yield* waitUntil("kv-3 decommissioned", Effect.map(service.pods, (ps) => (ps.some((p) => p.instance === "kv-3") ? undefined : ps)))
      yield* cluster.waitFor("kv-3's reservation released", (s) => !reservationsOf(s).some(({ agentId }) => agentId === kv3.agentId))
      expect(fs.existsSync(volumeDir(cluster, kv3.agentId!, "kv-store.kv-3.data"))).toBe(false)
      expect((yield* running(service)).map((p) => p.taskId)).toEqual(untouched)

      console.log("kv-store test: step 7")
      // 7. Uninstall: every task killed, every volume destroyed, every reservation released, the
      //    framework torn down: nothing left in the master's state.
      yield* service.uninstall
      yield* planComplete(service, "uninstall")
      const final = yield* cluster.waitFor("nothing left", (s) => s.frameworks.length === 0 && reservationsOf(s).length === 0)
      expect(final.tasks.filter((t) => t.state === v1.TaskState.RUNNING)).toEqual([])
      expect(reservationsOf(final)).toEqual([])
      for (const agent of cluster.agents) {
        const dir = path.join(agent.workDir, "volumes", "roles", "kv")
        expect(fs.existsSync(dir) ? fs.readdirSync(dir) : []).toEqual([])
      }
    }).pipe(Effect.provideService(References.MinimumLogLevel, "Warn")), 240_000)

  it.live("a scheduler stopped mid-deploy resumes from storage: no duplicate task, no leaked reservation", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ agents: 3, agentResources: "cpus:1;mem:512;disk:256" })
      const state = path.join(cluster.workDir, "kv-store.db")
      const first = yield* startScheduler(cluster, state)
      // Stop it while kv-1 is being launched (its step under way, kv-0 done).
      yield* waitUntil("kv-1 under way", Effect.map(first.service.plan("deploy"), (v) => {
        const step = v.phases[0]!.steps.find((s) => s.name === "kv-1")!
        return step.stored === "PREPARED" || step.stored === "STARTING" ? true : undefined
      }))
      yield* first.stop
      const frameworkId = (yield* cluster.operator.state).frameworks[0]!.info!.frameworkId
      expect(frameworkId).toMatch(/./)

      const second = yield* startScheduler(cluster, state)
      diagnose = Effect.all({ pods: second.service.pods, plans: second.service.plans })
      yield* planComplete(second.service, "deploy")
      const pods = yield* waitUntil("three ready pods", Effect.map(running(second.service), (ps) => (ps.length === 3 ? ps : undefined)))
      expect(new Set(pods.map((p) => p.agentId)).size).toBe(3)
      const s = yield* cluster.operator.state
      // The same framework (failed over, not registered anew), one task per pod ever launched.
      expect(s.frameworks.map((f) => f.info!.frameworkId)).toEqual([frameworkId])
      expect(s.tasks.map((t) => t.info!.taskId).sort()).toEqual(["kv-0.1.server", "kv-1.1.server", "kv-2.1.server"])
      // One reservation (with its volume) per pod, no more.
      const instancesReserved = reservationsOf(s).map(({ agentId, r }) =>
        `${agentId}:${r.reservations.at(-1)!.labels!.labels.find((l) => l.key === "berth.instance")!.value}`)
      expect(new Set(instancesReserved).size).toBe(3)
      yield* second.stop
    }).pipe(Effect.provideService(References.MinimumLogLevel, "Error")), 180_000)

  it.live("the failure monitor's clock survives a scheduler restart: a pod failing for too long is replaced", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ agents: 3, agentResources: "cpus:1;mem:512;disk:256" })
      const state = path.join(cluster.workDir, "kv-store.db")
      const options = { count: 2, replaceAfterMs: 4_000 }
      const first = yield* startScheduler(cluster, state, options)
      yield* planComplete(first.service, "deploy")
      const kill = (service: ServiceScheduler.Service) =>
        Effect.gen(function*() {
          const p = (yield* running(service)).find((x) => x.instance === "kv-0")!
          const pid = Number(fs.readFileSync(path.join(volumeDir(cluster, p.agentId!, `kv-store.kv-0${p.generation > 0 ? `.g${p.generation}` : ""}.data`), "pid"), "utf8"))
          process.kill(pid, "SIGKILL")
          return p
        })
      // First failure: restarted in place (it has not been failing for 4 s yet).
      const before = yield* kill(first.service)
      const back = yield* waitUntil("kv-0 restarted", Effect.map(running(first.service), (ps) => ps.find((p) => p.instance === "kv-0" && p.taskId !== before.taskId)))
      expect([back.agentId, back.generation]).toEqual([before.agentId, 0])
      // The scheduler restarts; more than 4 s after the first failure, kv-0 fails again.
      yield* first.stop
      yield* Effect.sleep("4500 millis")
      const second = yield* startScheduler(cluster, state, options)
      yield* waitUntil("kv-0 running again", Effect.map(running(second.service), (ps) => ps.find((p) => p.instance === "kv-0")))
      yield* kill(second.service)
      // The stored clock says it has been failing for over 4 s: replaced (a new generation, elsewhere).
      const replaced = yield* waitUntil("kv-0 replaced", Effect.map(running(second.service), (ps) => ps.find((p) => p.instance === "kv-0" && p.generation === 1)))
      expect(replaced.agentId).not.toBe(before.agentId)
      yield* second.stop
    }).pipe(Effect.provideService(References.MinimumLogLevel, "Error")), 180_000)

  it.live("the scheduler process SIGKILLed at random points during a deploy: it resumes, no duplicate task, no leaked reservation", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ agents: 3, agentResources: "cpus:1;mem:512;disk:256" })
      const state = path.join(cluster.workDir, "kv-store.db")
      const run = Effect.acquireRelease(
        Effect.sync(() => spawn(process.execPath, [main, "--master", cluster.master, "--state", state], { stdio: "ignore" })),
        (child) => Effect.sync(() => child.kill("SIGKILL"))
      )
      const kvTasks = (s: v1.GetStateResponse) => s.tasks.filter((t) => t.info!.taskId.startsWith("kv-"))
      // Kill it at a few random moments of the deploy (a seeded sequence, printed for replay).
      const seed = Date.now() % 1000
      const delays = [0, 1, 2].map((i) => 300 + ((seed * (i + 7) * 7919) % 2500))
      console.log(`kv-store SIGKILL delays (ms): ${delays.join(", ")}`)
      for (const delay of delays) {
        yield* Effect.scoped(Effect.gen(function*() {
          const child = yield* run
          yield* Effect.sleep(delay)
          child.kill("SIGKILL")
        }))
      }
      yield* Effect.scoped(Effect.gen(function*() {
        yield* run
        const done = yield* cluster.waitFor("three kv pods running", (s) =>
          kvTasks(s).filter((t) => t.state === v1.TaskState.RUNNING).length === 3, { timeout: 90_000 })
        // One framework; at most one live task per pod; one reservation per pod.
        expect(done.frameworks).toHaveLength(1)
        const live = kvTasks(done).filter((t) => t.state === v1.TaskState.RUNNING || t.state === v1.TaskState.STAGING || t.state === v1.TaskState.STARTING)
        expect(live.map((t) => t.info!.taskId.split(".")[0]).sort()).toEqual(["kv-0", "kv-1", "kv-2"])
        expect(new Set(live.map((t) => t.agentId)).size).toBe(3)
        const reserved = new Set(reservationsOf(done).map(({ agentId, r }) =>
          `${agentId}:${r.reservations.at(-1)!.labels!.labels.find((l) => l.key === "berth.instance")!.value}`))
        expect([...reserved].map((k) => k.split(":")[1]).sort()).toEqual(["kv-0", "kv-1", "kv-2"])
      }))
    }).pipe(Effect.provideService(References.MinimumLogLevel, "Error")), 180_000)
})
