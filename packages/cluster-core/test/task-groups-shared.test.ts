/**
 * Several task groups under one default executor (Mesos semantics), through a real master and
 * agent: a LAUNCH_GROUP naming a running default executor (same ExecutorInfo) joins it, so a
 * sidecar task (a backup) reads the pod's persistent volume while the pod's tasks keep running;
 * the group policy applies per group; the master refuses what cannot join; an agent restart
 * gives every group back.
 */
import { describe, expect, it } from "@effect/vitest"
import { Resources, TaskStates, v1 } from "@berth/proto"
import { TestCluster } from "@berth/testkit"
import { Effect, References } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import * as Framework from "../../../test/support/framework.ts"

const ROLE = "pods"
const { TaskState, TaskStatus_Reason: Reason } = v1

const small = [Resources.scalar("cpus", 0.1), Resources.scalar("mem", 16)]
const task = (taskId: string, script: string, extra: Partial<v1.TaskInfo> = {}): v1.TaskInfo =>
  v1.TaskInfo.create({ taskId, name: taskId, resources: small, command: { shell: true, value: script }, ...extra })
/** The pod's executor as the SDK sends it: the default executor, no resources of its own. */
const podExecutor = (executorId: string, extra: Partial<v1.ExecutorInfo> = {}): v1.ExecutorInfo =>
  v1.ExecutorInfo.create({ type: v1.ExecutorInfo_Type.DEFAULT, executorId, name: "pod", ...extra })
const launchGroup = (info: v1.ExecutorInfo, tasks: ReadonlyArray<v1.TaskInfo>): v1.Operation => ({
  operationId: "",
  kind: { $case: "launchGroup", value: { executor: info, taskGroup: { tasks: [...tasks] } } }
})
const reservation: v1.ReservationInfo = { type: v1.ReservationInfo_Type.DYNAMIC, role: ROLE, principal: "", labels: undefined }
const reservedDisk = (mb: number): v1.Resource => ({ ...Resources.scalar("disk", mb), reservations: [reservation] })
const volume = (id: string, containerPath: string, mb = 32): v1.Resource => ({
  ...reservedDisk(mb),
  disk: { persistence: { id, principal: "" }, volume: { containerPath, hostPath: "", mode: v1.Volume_Mode.RW } }
})
const reserveAndCreate = (volumes: ReadonlyArray<v1.Resource>): Array<v1.Operation> => [
  { operationId: "", kind: { $case: "reserve", value: { resources: volumes.map((v) => reservedDisk(v.value?.$case === "scalar" ? v.value.value : 0)) } } },
  { operationId: "", kind: { $case: "create", value: { volumes: [...volumes] } } }
]
/** Waits (at most ~10 s) for `file`, then runs `then`; exits 9 if it never comes. */
const after = (file: string, then: string) =>
  `i=0; until [ -f ${file} ]; do i=$((i+1)); [ $i -gt 200 ] && exit 9; sleep 0.05; done; ${then}`

const statesOf = (framework: Framework.TestFramework, taskId: string) =>
  framework.updates.filter((s) => s.taskId === taskId).map((s) => TaskStates.name(s.state))
const lastOf = (framework: Framework.TestFramework, taskId: string) => framework.updates.findLast((s) => s.taskId === taskId)!
const executorDir = (cluster: TestCluster.TestCluster, frameworkId: string, executorId: string) =>
  path.join(cluster.agents[0]!.workDir, "frameworks", frameworkId, "executors", executorId)
/** The runs of an executor id on the agent (one sandbox each). */
const runsOf = (cluster: TestCluster.TestCluster, frameworkId: string, executorId: string) =>
  fs.readdirSync(path.join(executorDir(cluster, frameworkId, executorId), "runs")).filter((n) => n !== "latest")
const sandboxOf = (cluster: TestCluster.TestCluster, frameworkId: string, executorId: string) =>
  path.join(executorDir(cluster, frameworkId, executorId), "runs", "latest")

/** A cluster of one agent, a framework in role "pods", and its next offer. */
const setup = Effect.gen(function*() {
  const cluster = yield* TestCluster.make({ agents: 1, agentResources: "cpus:4;mem:2048;disk:2048" })
  const framework = yield* Framework.open(cluster.master, "pods", { roles: [ROLE] })
  return { cluster, framework }
})

describe("several task groups in one default executor", () => {
  it.live("a backup group joins the running pod: it reads the pod's volume and FINISHES while the pod stays RUNNING", () =>
    Effect.gen(function*() {
      const { cluster, framework } = yield* setup
      const data = volume("pod-data", "data")
      const backups = volume("backup-data", "backup")
      let offer = yield* framework.nextOffer
      yield* framework.session.accept([offer.offerId], [
        ...reserveAndCreate([data, backups]),
        launchGroup(podExecutor("pod-0"), [
          task("server", "echo snapshot-7f3a > data/table.db; touch server-ready; exec sleep 120", {
            resources: [...small, data],
            killPolicy: { gracePeriodSeconds: 1 }
          })
        ])
      ], { refuseSeconds: 0 })
      yield* framework.awaitState("server", TaskState.RUNNING)
      const sandbox = sandboxOf(cluster, framework.frameworkId, "pod-0")
      while (!fs.existsSync(path.join(sandbox, "server-ready"))) yield* Effect.sleep("20 millis")

      // The backup: same ExecutorInfo, no resources of its own. It reads the pod's volume through
      // the shared sandbox and copies it into a volume of its own, linked in for it.
      offer = yield* framework.nextOffer
      const response = yield* framework.session.accept([offer.offerId], [
        launchGroup(podExecutor("pod-0"), [
          task("backup", `test "$(cat data/table.db)" = snapshot-7f3a && cp data/table.db backup/table.db.bak`, {
            resources: [...small, backups]
          })
        ])
      ])
      expect(response.launchedTaskIds).toEqual(["backup"])
      yield* framework.awaitTerminal(["backup"])
      expect(statesOf(framework, "backup")).toEqual(["STAGING", "STARTING", "RUNNING", "FINISHED"])
      expect(framework.updates.filter((s) => s.taskId === "backup").every((s) => s.executorId === "pod-0")).toBe(true)
      // The pod never stopped: no update past RUNNING.
      expect(statesOf(framework, "server")).toEqual(["STAGING", "STARTING", "RUNNING"])
      // One run of the executor: the backup ran in the pod's sandbox, with its output beside the pod's.
      expect(runsOf(cluster, framework.frameworkId, "pod-0")).toHaveLength(1)
      expect(fs.existsSync(path.join(sandbox, "tasks", "backup", "stdout"))).toBe(true)
      const volumeOnDisk = path.join(cluster.agents[0]!.workDir, "volumes", "roles", ROLE, "backup-data", "table.db.bak")
      expect(fs.readFileSync(volumeOnDisk, "utf8")).toBe("snapshot-7f3a\n")
      const state = yield* cluster.operator.state
      expect(state.tasks.map((t) => [t.info?.taskId, t.info?.executor?.executorId, TaskStates.name(t.state)]).sort()).toEqual([
        ["backup", "pod-0", "FINISHED"],
        ["server", "pod-0", "RUNNING"]
      ])
      yield* framework.session.kill("server")
      yield* framework.awaitTerminal(["server"])
      expect(lastOf(framework, "server").state).toBe(TaskState.KILLED)
    }))

  it.live("a failure in the second group kills its own group only; a kill of the first group's task leaves the second running", () =>
    Effect.gen(function*() {
      const { cluster, framework } = yield* setup
      const grace = { killPolicy: { gracePeriodSeconds: 1 } }
      let offer = yield* framework.nextOffer
      yield* framework.session.accept([offer.offerId], [
        launchGroup(podExecutor("pod-1"), [task("node", "exec sleep 120", grace), task("agent", "exec sleep 120", grace)])
      ], { refuseSeconds: 0 })
      yield* framework.awaitState("node", TaskState.RUNNING)
      yield* framework.awaitState("agent", TaskState.RUNNING)

      // (b) The second group: one task fails, its sibling goes with it; the first group runs on.
      offer = yield* framework.nextOffer
      yield* framework.session.accept([offer.offerId], [
        launchGroup(podExecutor("pod-1"), [
          task("side", "echo $$ > side.pid; exec sleep 120", grace),
          task("broken", after("side.pid", "exit 3"))
        ])
      ], { refuseSeconds: 0 })
      yield* framework.awaitTerminal(["side", "broken"])
      expect(statesOf(framework, "broken")).toEqual(["STAGING", "STARTING", "RUNNING", "FAILED"])
      expect(lastOf(framework, "side").state).toBe(TaskState.KILLED)
      expect(lastOf(framework, "side").reason).toBe(Reason.EXECUTOR_TERMINATED)
      expect(lastOf(framework, "side").message).toMatch(/^Killed with its task group: task broken failed \(Command exited with status 3\)/)
      expect(statesOf(framework, "node")).toEqual(["STAGING", "STARTING", "RUNNING"])
      expect(statesOf(framework, "agent")).toEqual(["STAGING", "STARTING", "RUNNING"])

      // (c) A third group runs beside them; killing a task of the first group kills that group only.
      offer = yield* framework.nextOffer
      yield* framework.session.accept([offer.offerId], [launchGroup(podExecutor("pod-1"), [task("long", "exec sleep 120", grace)])])
      yield* framework.awaitState("long", TaskState.RUNNING)
      yield* framework.session.kill("node")
      yield* framework.awaitTerminal(["node", "agent"])
      expect(lastOf(framework, "node").reason).toBe(Reason.KILLED_BY_SCHEDULER)
      expect(lastOf(framework, "agent").message).toMatch(/^Killed with its task group: task node was killed/)
      const state = yield* cluster.operator.state
      expect(state.tasks.find((t) => t.info?.taskId === "long")?.state).toBe(TaskState.RUNNING)
      expect(statesOf(framework, "long")).toEqual(["STAGING", "STARTING", "RUNNING"])
      expect(runsOf(cluster, framework.frameworkId, "pod-1")).toHaveLength(1)
      yield* framework.session.kill("long")
      yield* framework.awaitTerminal(["long"])
    }))

  it.live("the master refuses a group for a live executor id with another ExecutorInfo, or for a command executor's id; once the last task ended the id starts a new executor", () =>
    Effect.gen(function*() {
      const { cluster, framework } = yield* setup
      let offer = yield* framework.nextOffer
      yield* framework.session.accept([offer.offerId], [
        launchGroup(podExecutor("pod-2"), [task("main", after("stop-main", "true"))]),
        Framework.launch([task("single", "exec sleep 120", { killPolicy: { gracePeriodSeconds: 1 } })])
      ], { refuseSeconds: 0 })
      yield* framework.awaitState("main", TaskState.RUNNING)
      yield* framework.awaitState("single", TaskState.RUNNING)
      offer = yield* framework.nextOffer
      const reject = (operation: v1.Operation) =>
        framework.session.accept([offer.offerId], [operation]).pipe(
          Effect.flip,
          Effect.map((error) => ({ tag: error._tag, message: error.message, field: "field" in error ? error.field : undefined }))
        )
      const at = "operations[0].launchGroup"
      const renamed = yield* reject(launchGroup(podExecutor("pod-2", { name: "other" }), [task("x1", "true")]))
      expect([renamed.tag, renamed.field]).toEqual(["InvalidArgument", `${at}.executor`])
      expect(renamed.message).toMatch(/executor "pod-2" already runs task groups on agent .* with another ExecutorInfo/)
      const withResources = yield* reject(launchGroup(podExecutor("pod-2", { resources: small }), [task("x2", "true")]))
      expect([withResources.tag, withResources.field]).toEqual(["InvalidArgument", `${at}.executor`])
      const commandExecutor = yield* reject(launchGroup(podExecutor("single"), [task("x3", "true")]))
      expect([commandExecutor.tag, commandExecutor.field]).toEqual(["InvalidArgument", `${at}.executor.executorId`])
      expect(commandExecutor.message).toMatch(/executor "single" is already in use by a live command or custom executor.*only a running default executor \(TYPE_DEFAULT\) takes further task groups/)
      // Nothing of the refused groups exists anywhere.
      const state = yield* cluster.operator.state
      expect(state.tasks.map((t) => t.info?.taskId).sort()).toEqual(["main", "single"])
      expect(fs.existsSync(executorDir(cluster, framework.frameworkId, "single"))).toBe(true)

      // The executor's last task ends: the id then names a new executor (a new run, a new sandbox).
      fs.writeFileSync(path.join(sandboxOf(cluster, framework.frameworkId, "pod-2"), "stop-main"), "")
      yield* framework.awaitTerminal(["main"])
      expect(lastOf(framework, "main").state).toBe(TaskState.FINISHED)
      const again = yield* framework.session.accept([offer.offerId], [launchGroup(podExecutor("pod-2", { name: "renamed" }), [task("next", "true")])])
      expect(again.launchedTaskIds).toEqual(["next"])
      yield* framework.awaitTerminal(["next"])
      expect(statesOf(framework, "next")).toEqual(["STAGING", "STARTING", "RUNNING", "FINISHED"])
      expect(runsOf(cluster, framework.frameworkId, "pod-2")).toHaveLength(2)
      yield* framework.session.kill("single")
      yield* framework.awaitTerminal(["single"])
    }))

  it.live("a joining group is charged its tasks' resources only, never the executor's again", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ agents: 1, agentResources: "cpus:1;mem:1024;disk:1024" })
      const framework = yield* Framework.open(cluster.master, "pods", { roles: [ROLE] })
      // An executor with resources of its own (the SDK sends none; a framework may).
      const heavy = podExecutor("pod-5", { resources: [Resources.scalar("cpus", 0.5), Resources.scalar("mem", 32)] })
      let offer = yield* framework.nextOffer
      yield* framework.session.accept([offer.offerId], [launchGroup(heavy, [task("main", "exec sleep 120", { killPolicy: { gracePeriodSeconds: 1 } })])], {
        refuseSeconds: 0
      })
      yield* framework.awaitState("main", TaskState.RUNNING)
      // 0.4 cpus are left: 0.3 for the new task fits only if the executor's 0.5 is not taken again.
      offer = yield* framework.nextOffer
      expect(Resources.sumScalar(offer.resources, "cpus")).toBeCloseTo(0.4)
      const cpus = [Resources.scalar("cpus", 0.3), Resources.scalar("mem", 16)]
      const joined = yield* framework.session.accept([offer.offerId], [launchGroup(heavy, [task("extra", "true", { resources: cpus })])])
      expect(joined.launchedTaskIds).toEqual(["extra"])
      yield* framework.awaitTerminal(["extra"])
      expect(lastOf(framework, "extra").state).toBe(TaskState.FINISHED)
      expect(runsOf(cluster, framework.frameworkId, "pod-5")).toHaveLength(1)
      yield* framework.session.kill("main")
      yield* framework.awaitTerminal(["main"])
    }))

  it.live("two groups for one new executor in one Accept start one executor run, each group with its own policy", () =>
    Effect.gen(function*() {
      const { cluster, framework } = yield* setup
      const offer = yield* framework.nextOffer
      const response = yield* framework.session.accept([offer.offerId], [
        launchGroup(podExecutor("pod-6"), [task("keeper", "echo $$ > keeper.pid; exec sleep 120", { killPolicy: { gracePeriodSeconds: 1 } })]),
        launchGroup(podExecutor("pod-6"), [task("quitter", after("keeper.pid", "exit 2"))])
      ])
      expect(response.launchedTaskIds).toEqual(["keeper", "quitter"])
      yield* framework.awaitTerminal(["quitter"])
      expect(lastOf(framework, "quitter").state).toBe(TaskState.FAILED)
      // The quitter saw the keeper's file: one sandbox. Its failure did not touch the keeper.
      expect(runsOf(cluster, framework.frameworkId, "pod-6")).toHaveLength(1)
      expect(statesOf(framework, "keeper")).toEqual(["STAGING", "STARTING", "RUNNING"])
      yield* framework.session.kill("keeper")
      yield* framework.awaitTerminal(["keeper"])
    }))

  it.live("an agent restart gives both groups back to the executor, each with its own policy, and a third group still joins", () =>
    Effect.gen(function*() {
      const { cluster, framework } = yield* setup
      const grace = { killPolicy: { gracePeriodSeconds: 1 } }
      let offer = yield* framework.nextOffer
      yield* framework.session.accept([offer.offerId], [launchGroup(podExecutor("pod-3"), [task("server", "exec sleep 120", grace)])], {
        refuseSeconds: 0
      })
      yield* framework.awaitState("server", TaskState.RUNNING)
      offer = yield* framework.nextOffer
      yield* framework.session.accept([offer.offerId], [
        launchGroup(podExecutor("pod-3"), [task("sidecar", "exec sleep 120", grace), task("gate", after("fail-gate", "exit 5"))])
      ], { refuseSeconds: 0 })
      yield* framework.awaitState("sidecar", TaskState.RUNNING)
      yield* framework.awaitState("gate", TaskState.RUNNING)
      const sandbox = sandboxOf(cluster, framework.frameworkId, "pod-3")

      yield* cluster.agents[0]!.restart
      // After the restart the second group's task fails: it takes its sibling down, not the server.
      fs.writeFileSync(path.join(sandbox, "fail-gate"), "")
      yield* framework.awaitTerminal(["gate", "sidecar"])
      expect(lastOf(framework, "gate").state).toBe(TaskState.FAILED)
      expect(lastOf(framework, "gate").exitCode).toBe(5)
      expect(lastOf(framework, "sidecar").state).toBe(TaskState.KILLED)
      expect(lastOf(framework, "sidecar").message).toMatch(/^Killed with its task group: task gate failed/)
      expect(statesOf(framework, "server")).toEqual(["STAGING", "STARTING", "RUNNING"])

      // The recovered executor still takes groups: same run, same sandbox.
      offer = yield* framework.nextOffer
      yield* framework.session.accept([offer.offerId], [launchGroup(podExecutor("pod-3"), [task("after-restart", "touch after-restart.done")])])
      yield* framework.awaitTerminal(["after-restart"])
      expect(lastOf(framework, "after-restart").state).toBe(TaskState.FINISHED)
      expect(fs.existsSync(path.join(sandbox, "after-restart.done"))).toBe(true)
      expect(runsOf(cluster, framework.frameworkId, "pod-3")).toHaveLength(1)
      expect(statesOf(framework, "server")).toEqual(["STAGING", "STARTING", "RUNNING"])
      yield* framework.session.kill("server")
      yield* framework.awaitTerminal(["server"])
      expect(lastOf(framework, "server").reason).toBe(Reason.KILLED_BY_SCHEDULER)
    }).pipe(Effect.provideService(References.MinimumLogLevel, "Error")), 90_000)
})
