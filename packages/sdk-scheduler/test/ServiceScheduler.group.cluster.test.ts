// A pod with several RUNNING tasks runs them as one task group (LAUNCH_GROUP, the default
// executor): one sandbox, the pod's volume seen by every task, each task limited to its own
// share of the pod's reservation; a task that dies takes its group down and the group is
// relaunched whole, in place, on the same volume; an update rolls the group; uninstall leaves
// nothing. A real in-process cluster: real gRPC, real agents spawning the tasks.
import { describe, expect, it } from "@effect/vitest"
import { v1 } from "@berth/proto"
import { ServiceScheduler, ServiceSpec } from "@berth/sdk-scheduler"
import { StateStore } from "@berth/storage"
import { TestCluster } from "@berth/testkit"
import { Context, Effect, Exit, Layer, References, Scope } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"

const specOf = (version: string) =>
  ServiceSpec.decodeSync({
    name: "web",
    role: "web",
    pods: {
      app: {
        count: 2,
        placement: [["hostname", "UNIQUE"]],
        volumes: [{ path: "data", size: 16 }],
        tasks: {
          init: { goal: "FINISH", cpus: 0.1, mem: 32, cmd: "echo init >> data/init.log" },
          server: {
            goal: "RUNNING",
            cpus: 0.1,
            mem: 48,
            env: { VERSION: version },
            cmd: `echo "server $VERSION" >> data/log && echo $$ > data/server.pid && touch server-ready && exec sleep 100000`,
            readiness: { cmd: "test -f server-ready", intervalSeconds: 0.2 }
          },
          sidecar: {
            goal: "RUNNING",
            cpus: 0.2,
            mem: 64,
            // The sidecar reads what the server wrote: the same sandbox and volume.
            cmd: `while ! test -f data/server.pid; do sleep 0.1; done; echo "sidecar saw $(cat data/server.pid)" >> data/log && echo $$ > data/sidecar.pid && while ! test -f data/stop-sidecar; do sleep 0.1; done; rm data/stop-sidecar`,
            readiness: { cmd: "test -f data/sidecar.pid", intervalSeconds: 0.2 }
          },
          // Run by the backup plan inside the running group: it reads the pod's volume.
          backup: {
            goal: "FINISH",
            cpus: 0.1,
            mem: 32,
            cmd: `test -s data/log && echo "$BACKUP_NAME: $(wc -l < data/log) lines, server $(cat data/server.pid)" >> data/backups`
          }
        }
      }
    },
    plans: {
      backup: { parameters: { BACKUP_NAME: "unnamed" }, phases: { backup: { pod: "app", strategy: "parallel", tasks: ["backup"] } } }
    }
  })

type Cluster = TestCluster.TestCluster

const start = (cluster: Cluster, state: string) =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    const context = yield* Layer.build(
      ServiceScheduler.layerStack({ spec: specOf("1"), master: cluster.master }).pipe(Layer.provide(StateStore.layerSqlite({ path: state })))
    ).pipe(Scope.provide(scope))
    return { service: Context.get(context, ServiceScheduler.ServiceScheduler), stop: Scope.close(scope, Exit.void) }
  })

const waitUntil = <A>(what: string, check: Effect.Effect<A | undefined, any>, diagnose: Effect.Effect<unknown, any>, timeoutMs = 90_000) =>
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

const volume = (cluster: Cluster, agentId: string, instance: string) =>
  path.join(cluster.agents.find((a) => a.agentId === agentId)!.workDir, "volumes", "roles", "web", `web.${instance}.data`)
const lines = (file: string) => (fs.existsSync(file) ? fs.readFileSync(file, "utf8").trim().split("\n") : [])
const scalar = (t: v1.Task, name: string) =>
  t.info!.resources.filter((r) => r.name === name && r.disk?.persistence === undefined).reduce((sum, r) => sum + (r.value?.$case === "scalar" ? r.value.value : 0), 0)

describe("ServiceScheduler: pods with several RUNNING tasks", () => {
  it.live("run as one task group sharing the volume; a dying task relaunches the group in place; updates roll; uninstall leaves nothing", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ agents: 3, agentResources: "cpus:1;mem:512;disk:256" })
      const { service } = yield* start(cluster, path.join(cluster.workDir, "web.db"))
      const diagnose = Effect.all({ pods: service.pods, plans: service.plans, why: Effect.forEach(["app-0", "app-1"], service.whyNot) })
      const ready = Effect.map(service.pods, (ps) => ps.filter((p) => p.state === "RUNNING" && p.ready === true))

      // 1. Deploy: each instance runs server and sidecar as one group, both ready.
      yield* waitUntil("deploy complete", Effect.map(service.plan("deploy"), (v) => (v.status === "COMPLETE" ? v : undefined)), diagnose)
      const pods = yield* ready
      expect(pods.map((p) => p.instance).sort()).toEqual(["app-0", "app-1"])
      for (const p of pods) {
        expect(p.tasks.map((t) => [t.name, t.state, t.ready]).sort()).toEqual([["server", "RUNNING", true], ["sidecar", "RUNNING", true]])
      }
      const state = yield* cluster.waitFor("state", () => true)
      for (const p of pods) {
        const mine = state.tasks.filter((t) => t.info!.taskId.startsWith(`${p.instance}.`) && t.state === v1.TaskState.RUNNING)
        expect(mine).toHaveLength(2)
        // One executor for the group, on one agent.
        expect(new Set(mine.map((t) => t.info!.executor?.executorId))).toEqual(new Set([p.taskId!.slice(0, p.taskId!.lastIndexOf("."))]))
        expect(new Set(mine.map((t) => t.agentId))).toEqual(new Set([p.agentId]))
        // Each task holds its own share of the pod's reservation (the agent limits it by that).
        const server = mine.find((t) => t.info!.taskId.endsWith(".server"))!
        const sidecar = mine.find((t) => t.info!.taskId.endsWith(".sidecar"))!
        expect(scalar(sidecar, "cpus")).toBeCloseTo(0.2)
        expect(scalar(sidecar, "mem")).toBeCloseTo(64)
        // Only its own share: what the init and backup tasks take stays in the pod's reservation.
        expect(scalar(server, "cpus")).toBeCloseTo(0.1)
        expect(scalar(server, "mem")).toBeCloseTo(48)
        // The sidecar saw the server's pid in the shared volume.
        const log = lines(path.join(volume(cluster, p.agentId!, p.instance), "log"))
        const serverPid = fs.readFileSync(path.join(volume(cluster, p.agentId!, p.instance), "server.pid"), "utf8").trim()
        expect(log).toEqual(["server 1", `sidecar saw ${serverPid}`])
        expect(lines(path.join(volume(cluster, p.agentId!, p.instance), "init.log"))).toEqual(["init"])
      }

      // 2. The sidecar of app-1 dies: the group goes down and is relaunched whole, in place, on the same volume.
      const app1 = pods.find((p) => p.instance === "app-1")!
      const dir = volume(cluster, app1.agentId!, "app-1")
      process.kill(Number(fs.readFileSync(path.join(dir, "sidecar.pid"), "utf8")), "SIGKILL")
      const again = yield* waitUntil("app-1 relaunched", Effect.map(ready, (ps) => ps.find((p) => p.instance === "app-1" && p.taskId !== app1.taskId)), diagnose)
      expect(again.agentId).toBe(app1.agentId)
      expect(again.generation).toBe(0)
      expect(again.tasks.map((t) => t.state)).toEqual(["RUNNING", "RUNNING"])
      expect(lines(path.join(dir, "log")).filter((l) => l === "server 1")).toHaveLength(2)
      const after = yield* cluster.waitFor("state", () => true)
      const old = after.tasks.filter((t) => t.info!.taskId.startsWith(`${app1.taskId!.slice(0, app1.taskId!.lastIndexOf("."))}.`))
      expect(old.map((t) => t.state).sort()).toEqual([v1.TaskState.FAILED, v1.TaskState.KILLED].sort())
      // app-0 was not touched.
      expect((yield* ready).find((p) => p.instance === "app-0")!.taskId).toBe(pods.find((p) => p.instance === "app-0")!.taskId)


      // 2b. The sidecar of app-0 ends on its own (exit 0, FINISHED) while the server runs on: a
      //     RUNNING task must run, so the scheduler kills the server and the group is relaunched whole.
      const app0 = (yield* ready).find((p) => p.instance === "app-0")!
      const dir0 = volume(cluster, app0.agentId!, "app-0")
      fs.writeFileSync(path.join(dir0, "stop-sidecar"), "")
      const again0 = yield* waitUntil("app-0 relaunched", Effect.map(ready, (ps) => ps.find((p) => p.instance === "app-0" && p.taskId !== app0.taskId)), diagnose)
      expect(again0.agentId).toBe(app0.agentId)
      const ended0 = (yield* cluster.waitFor("state", () => true)).tasks.filter((t) => t.info!.taskId.startsWith(`${app0.taskId!.slice(0, app0.taskId!.lastIndexOf("."))}.`))
      expect(ended0.map((t) => [t.info!.taskId.slice(t.info!.taskId.lastIndexOf(".") + 1), t.state]).sort()).toEqual([["server", v1.TaskState.KILLED], ["sidecar", v1.TaskState.FINISHED]])
      expect(lines(path.join(dir0, "log")).filter((l) => l === "server 1")).toHaveLength(2)

      // 3. A config change rolls each group in place; the volume keeps its data.
      yield* service.update(specOf("2"))
      yield* waitUntil("update rolled", Effect.gen(function*() {
        const v = yield* service.plan("deploy")
        const ps = yield* ready
        return v.status === "COMPLETE" && ps.length === 2 && ps.every((p) => p.upToDate) ? ps : undefined
      }), diagnose)
      for (const p of yield* ready) {
        const log = lines(path.join(volume(cluster, p.agentId!, p.instance), "log"))
        expect(log.filter((l) => l.startsWith("server")).at(-1)).toBe("server 2")
        expect(log.length).toBeGreaterThan(2)
      }

      // 4. The backup plan runs its task inside each running group: it reads the volume the
      //    server writes, on the reservation's share left for it; the group keeps running.
      const before = yield* ready
      yield* service.startPlan("backup", { BACKUP_NAME: "nightly" })
      yield* waitUntil("backup complete", Effect.map(service.plan("backup"), (v) => (v.status === "COMPLETE" ? v : undefined)), diagnose)
      const during = yield* cluster.waitFor("state", () => true)
      for (const p of before) {
        const dir = volume(cluster, p.agentId!, p.instance)
        const serverPid = fs.readFileSync(path.join(dir, "server.pid"), "utf8").trim()
        expect(lines(path.join(dir, "backups"))).toEqual([expect.stringMatching(new RegExp(`^nightly: \\d+ lines, server ${serverPid}$`))])
        const backup = during.tasks.find((t) => t.info!.taskId.startsWith(`${p.instance}-backup-backup-`))!
        expect(backup.state).toBe(v1.TaskState.FINISHED)
        expect(backup.agentId).toBe(p.agentId)
        expect(backup.info!.executor?.executorId).toBe(p.taskId!.slice(0, p.taskId!.lastIndexOf(".")))
        // Its resources came from the pod's reservation.
        expect(backup.info!.resources.every((r) => r.reservations.length > 0)).toBe(true)
      }
      expect((yield* ready).map((p) => p.taskId)).toEqual(before.map((p) => p.taskId))

      // 5. Uninstall: nothing reserved, no volume, no task left.
      yield* service.uninstall
      yield* waitUntil("uninstalled", Effect.map(service.plan("uninstall"), (v) => (v.status === "COMPLETE" ? v : undefined)), diagnose)
      const end = yield* cluster.waitFor("state", () => true)
      expect(end.tasks.filter((t) => t.state === v1.TaskState.RUNNING)).toEqual([])
      const reserved = end.agents.flatMap((a) => [...(a.info?.resources ?? []), ...a.allocated, ...a.offered]).filter((r) => r.reservations.length > 0)
      expect(reserved).toEqual([])
    }).pipe(Effect.scoped, Effect.provideService(References.MinimumLogLevel, "Error")), 300_000)
})
