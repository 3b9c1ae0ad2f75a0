import { describe, expect, it } from "@effect/vitest"
import { Resources, TaskStates, v1 } from "@berth/proto"
import { TestCluster } from "@berth/testkit"
import { Effect, References } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import * as Framework from "./support/framework.ts"
import * as AgentProcess from "./support/agentProcess.ts"
import * as MasterSupport from "./support/master.ts"
import { alive } from "./support/processes.ts"

const ROLE = "pods"
const { TaskState, TaskStatus_Reason: Reason } = v1

const small = [Resources.scalar("cpus", 0.1), Resources.scalar("mem", 16)]
const task = (taskId: string, script: string, extra: Partial<v1.TaskInfo> = {}): v1.TaskInfo =>
  v1.TaskInfo.create({ taskId, name: taskId, resources: small, command: { shell: true, value: script }, ...extra })
const executor = (executorId: string, extra: Partial<v1.ExecutorInfo> = {}): v1.ExecutorInfo =>
  v1.ExecutorInfo.create({ type: v1.ExecutorInfo_Type.DEFAULT, executorId, resources: small, ...extra })
const launchGroup = (info: v1.ExecutorInfo, tasks: ReadonlyArray<v1.TaskInfo>): v1.Operation => ({
  operationId: "",
  kind: { $case: "launchGroup", value: { executor: info, taskGroup: { tasks: [...tasks] } } }
})
const statesOf = (framework: Framework.TestFramework, taskId: string) =>
  framework.updates.filter((s) => s.taskId === taskId).map((s) => TaskStates.name(s.state))
const lastOf = (framework: Framework.TestFramework, taskId: string) => framework.updates.findLast((s) => s.taskId === taskId)!
const executorsDir = (cluster: TestCluster.TestCluster, frameworkId: string) =>
  path.join(cluster.agents[0]!.workDir, "frameworks", frameworkId, "executors")
/** Polls a file a task writes (a pid), in real time. */
const pidFile = (file: string) =>
  Effect.gen(function*() {
    while (!(fs.existsSync(file) && fs.readFileSync(file, "utf8").endsWith("\n"))) yield* Effect.sleep("20 millis")
    return Number(fs.readFileSync(file, "utf8").trim())
  }).pipe(Effect.timeout("10 seconds"))

describe("task groups (LAUNCH_GROUP) under the default executor", () => {
  it.live("three tasks start together in one sandbox and share it and a persistent volume", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ agents: 1, agentResources: "cpus:2;mem:1024;disk:1024" })
      const framework = yield* Framework.open(cluster.master, "pods", { roles: [ROLE] })
      const offer = yield* framework.nextOffer
      const reservation: v1.ReservationInfo = { type: v1.ReservationInfo_Type.DYNAMIC, role: ROLE, principal: "", labels: undefined }
      const disk: v1.Resource = { ...Resources.scalar("disk", 64), reservations: [reservation] }
      const volume: v1.Resource = {
        ...disk,
        disk: { persistence: { id: "pod-data", principal: "" }, volume: { containerPath: "data", hostPath: "", mode: v1.Volume_Mode.RW } }
      }
      const wait = (file: string) => `i=0; until [ -f ${file} ]; do i=$((i+1)); [ $i -gt 200 ] && exit 9; sleep 0.05; done`
      const response = yield* framework.session.accept([offer.offerId], [
        { operationId: "", kind: { $case: "reserve", value: { resources: [disk] } } },
        { operationId: "", kind: { $case: "create", value: { volumes: [volume] } } },
        launchGroup(executor("pod-1"), [
          // Each waits for another's file: they finish only if all three run at the same time.
          task("writer", `touch writer-up; ${wait("reader-up")}; echo from-writer > shared.txt; echo on-volume > data/v.txt`, {
            resources: [...small, volume]
          }),
          task("reader", `touch reader-up; ${wait("shared.txt")}; ${wait("data/v.txt")}; cat shared.txt data/v.txt`),
          task("third", `${wait("writer-up")}; ${wait("data/v.txt")}; echo "$BERTH_EXECUTOR_ID $BERTH_TASK_ID"; ls data`)
        ])
      ])
      expect(response.launchedTaskIds).toEqual(["writer", "reader", "third"])
      yield* framework.awaitTerminal(["writer", "reader", "third"])
      for (const id of ["writer", "reader", "third"]) {
        expect(statesOf(framework, id), id).toEqual(["STAGING", "STARTING", "RUNNING", "FINISHED"])
        expect(framework.updates.filter((s) => s.taskId === id).every((s) => s.executorId === "pod-1"), id).toBe(true)
      }
      // One sandbox for the executor run, each task's output in tasks/<taskId>/ inside it.
      expect(fs.readdirSync(executorsDir(cluster, framework.frameworkId))).toEqual(["pod-1"])
      const sandbox = path.join(executorsDir(cluster, framework.frameworkId), "pod-1", "runs", "latest")
      const output = (id: string) => fs.readFileSync(path.join(sandbox, "tasks", id, "stdout"), "utf8")
      expect(output("reader")).toBe("from-writer\non-volume\n")
      expect(output("third")).toBe("pod-1 third\nv.txt\n")
      // The volume was linked once, and its data is in the volume, not just the sandbox.
      expect(fs.lstatSync(path.join(sandbox, "data")).isSymbolicLink()).toBe(true)
      const volumeDir = path.join(cluster.agents[0]!.workDir, "volumes", "roles", ROLE, "pod-data")
      expect(fs.readFileSync(path.join(volumeDir, "v.txt"), "utf8")).toBe("on-volume\n")
      // The master recorded every task with its executor.
      const state = yield* cluster.operator.state
      expect(state.tasks.map((t) => [t.info?.taskId, t.info?.executor?.executorId]).sort()).toEqual([
        ["reader", "pod-1"],
        ["third", "pod-1"],
        ["writer", "pod-1"]
      ])
    }))

  it.live("a group whose resources exceed the offer is rejected, naming the field, and nothing is launched", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ agents: 1, agentResources: "cpus:2;mem:1024;disk:1024" })
      const framework = yield* Framework.open(cluster.master)
      const offer = yield* framework.nextOffer
      const big = [Resources.scalar("cpus", 0.7), Resources.scalar("mem", 16)]
      // Each task fits alone, but the executor's 0.1 cpus and 3 × 0.7 cpus need 2.2 of the offer's 2.
      const error = yield* framework.session
        .accept([offer.offerId], [
          launchGroup(executor("too-big"), [task("t1", "true", { resources: big }), task("t2", "true", { resources: big }), task("t3", "true", { resources: big })])
        ])
        .pipe(Effect.flip)
      expect(error._tag).toBe("InvalidArgument")
      if (error._tag !== "InvalidArgument") return
      expect(error.field).toBe("operations[0].launchGroup.resources")
      expect(error.rule).toMatch(/the executor and its 3 tasks together: needs .*cpus.*nothing of the group is launched/)
      const state = yield* cluster.operator.state
      expect(state.tasks).toEqual([])
      expect(fs.existsSync(executorsDir(cluster, framework.frameworkId))).toBe(false)
      // The offer is intact: the same group minus one task fits.
      const ok = yield* framework.session.accept([offer.offerId], [
        launchGroup(executor("fits"), [task("t1", "true", { resources: big }), task("t2", "true", { resources: big })])
      ])
      expect(ok.launchedTaskIds).toEqual(["t1", "t2"])
      yield* framework.awaitTerminal(["t1", "t2"])
      expect(statesOf(framework, "t1")).toEqual(["STAGING", "STARTING", "RUNNING", "FINISHED"])
    }))

  it.live("one task exiting non-zero kills its siblings (KILLED, with the reason)", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ agents: 1, agentResources: "cpus:2;mem:1024;disk:1024" })
      const framework = yield* Framework.open(cluster.master)
      const offer = yield* framework.nextOffer
      const grace = { killPolicy: { gracePeriodSeconds: 1 } }
      yield* framework.session.accept([offer.offerId], [
        launchGroup(executor("pod-fail"), [
          task("s1", "echo $$ > s1.pid; exec sleep 60", grace),
          task("s2", "echo $$ > s2.pid; exec sleep 60", grace),
          task("bad", "until [ -f s1.pid ] && [ -f s2.pid ]; do sleep 0.05; done; sleep 0.2; exit 3")
        ])
      ])
      const sandbox = path.join(executorsDir(cluster, framework.frameworkId), "pod-fail", "runs", "latest")
      const pids = [yield* pidFile(path.join(sandbox, "s1.pid")), yield* pidFile(path.join(sandbox, "s2.pid"))]
      yield* framework.awaitTerminal(["s1", "s2", "bad"])
      expect(statesOf(framework, "bad")).toEqual(["STAGING", "STARTING", "RUNNING", "FAILED"])
      expect(lastOf(framework, "bad").exitCode).toBe(3)
      for (const id of ["s1", "s2"]) {
        expect(statesOf(framework, id), id).toEqual(["STAGING", "STARTING", "RUNNING", "KILLING", "KILLED"])
        expect(lastOf(framework, id).reason, id).toBe(Reason.EXECUTOR_TERMINATED)
        expect(lastOf(framework, id).message, id).toMatch(/^Killed with its task group: task bad failed \(Command exited with status 3\)/)
      }
      for (const pid of pids) expect(alive(pid)).toBe(false)
      const state = yield* cluster.operator.state
      expect(state.tasks.map((t) => [t.info?.taskId, TaskStates.name(t.state)]).sort()).toEqual([
        ["bad", "FAILED"],
        ["s1", "KILLED"],
        ["s2", "KILLED"]
      ])
    }))

  it.live("a scheduler kill of one task ends the whole group; bad executor infos are rejected naming the field", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ agents: 1, agentResources: "cpus:2;mem:1024;disk:1024" })
      const framework = yield* Framework.open(cluster.master)
      let offer = yield* framework.nextOffer
      yield* framework.session.accept([offer.offerId], [
        launchGroup(executor("pod-live"), [task("a", "exec sleep 60"), task("b", "exec sleep 60")])
      ], { refuseSeconds: 0 })
      yield* framework.awaitState("a", TaskState.RUNNING)
      yield* framework.awaitState("b", TaskState.RUNNING)
      offer = yield* framework.nextOffer

      const reject = (name: string, operation: v1.Operation) =>
        framework.session.accept([offer.offerId], [operation]).pipe(
          Effect.flip,
          Effect.map((error) => ({ name, tag: error._tag, message: error.message, field: "field" in error ? error.field : undefined }))
        )
      const at = "operations[0].launchGroup"
      const results = [
        yield* reject("executor id in use", launchGroup(executor("pod-live", { name: "other" }), [task("c", "true")])),
        yield* reject("single task named like a live executor", Framework.launch([task("pod-live", "true")])),
        yield* reject("bad executor id", launchGroup(executor("no/slash"), [task("c", "true")])),
        yield* reject("unspecified type", launchGroup(executor("e1", { type: v1.ExecutorInfo_Type.UNSPECIFIED }), [task("c", "true")])),
        yield* reject("custom type", launchGroup(executor("e1", { type: v1.ExecutorInfo_Type.CUSTOM }), [task("c", "true")])),
        yield* reject("executor command", launchGroup(executor("e1", { command: v1.CommandInfo.create({ value: "x" }) }), [task("c", "true")])),
        yield* reject("empty group", launchGroup(executor("e1"), [])),
        yield* reject("task ids twice", launchGroup(executor("e1"), [task("c", "true"), task("c", "true")])),
        yield* reject("task id live", launchGroup(executor("e1"), [task("a", "true")])),
        yield* reject("task with an executor", launchGroup(executor("e1"), [task("c", "true", { executor: executor("x") })]))
      ]
      expect(results.map(({ field, name, tag }) => [name, tag, field])).toEqual([
        ["executor id in use", "InvalidArgument", `${at}.executor`],
        ["single task named like a live executor", "InvalidArgument", "operations[0].launch.taskInfos[0].taskId"],
        ["bad executor id", "InvalidArgument", `${at}.executor.executorId`],
        ["unspecified type", "InvalidArgument", `${at}.executor.type`],
        ["custom type", "CallFailed", undefined],
        ["executor command", "InvalidArgument", `${at}.executor.command`],
        ["empty group", "InvalidArgument", `${at}.taskGroup.tasks`],
        ["task ids twice", "InvalidArgument", `${at}.taskGroup.tasks[1].taskId`],
        ["task id live", "InvalidArgument", `${at}.taskGroup.tasks[0].taskId`],
        ["task with an executor", "InvalidArgument", `${at}.taskGroup.tasks[0].executor`]
      ])
      expect(results[0]!.message).toMatch(/executor "pod-live" already runs task groups on agent .* with another ExecutorInfo/)
      // A custom executor is not served yet: UNIMPLEMENTED, naming the field.
      expect(results[4]!.message).toMatch(/operations\[0\]\.launchGroup\.executor\.type: custom executors is not supported/)
      const live = yield* cluster.operator.state
      expect(live.tasks.map((t) => t.info?.taskId).sort()).toEqual(["a", "b"])
      expect(fs.readdirSync(executorsDir(cluster, framework.frameworkId))).toEqual(["pod-live"])

      // Killing one task kills the group (Mesos' semantics).
      yield* framework.session.kill("a")
      yield* framework.awaitTerminal(["a", "b"])
      expect(statesOf(framework, "a")).toEqual(["STAGING", "STARTING", "RUNNING", "KILLING", "KILLED"])
      expect(statesOf(framework, "b")).toEqual(["STAGING", "STARTING", "RUNNING", "KILLING", "KILLED"])
      expect(lastOf(framework, "a").reason).toBe(Reason.KILLED_BY_SCHEDULER)
      expect(lastOf(framework, "b").reason).toBe(Reason.KILLED_BY_SCHEDULER)
      expect(lastOf(framework, "b").message).toMatch(/^Killed with its task group: task a was killed/)

      // Once the group is over its executor id is free again.
      const again = yield* framework.session.accept([offer.offerId], [launchGroup(executor("pod-live"), [task("c", "true")])])
      expect(again.launchedTaskIds).toEqual(["c"])
      yield* framework.awaitState("c", TaskState.FINISHED)
    }))

  it.live("a group outlives a SIGKILLed agent: re-attached, and a task that failed meanwhile still takes its sibling down", () =>
    Effect.gen(function*() {
      const dir = yield* AgentProcess.workDir("berth-group-recover-")
      const master = yield* MasterSupport.start()
      const args = ["--status-update-retry-min", "0.5"]
      const first = yield* AgentProcess.startAgent(master.endpoint, dir, args)
      const agentId = yield* first.registered
      const framework = yield* AgentProcess.openFramework(master.endpoint)
      yield* framework.session.accept([(yield* framework.nextOffer).offerId], [
        launchGroup(executor("pod-r"), [
          task("keep", "echo $$ > keep.pid; exec sleep 300", { killPolicy: { gracePeriodSeconds: 1 } }),
          task("gate", "echo $$ > gate.pid; while [ ! -f go ]; do sleep 0.05; done; exit 3")
        ])
      ])
      for (const id of ["keep", "gate"]) yield* framework.await(`${id} RUNNING`, (s) => s.taskId === id && s.state === TaskState.RUNNING)
      const sandbox = AgentProcess.sandbox(dir, framework.frameworkId, "pod-r")
      const keep = yield* pidFile(path.join(sandbox, "keep.pid"))
      const gate = yield* pidFile(path.join(sandbox, "gate.pid"))

      yield* AgentProcess.killAgent(first)
      expect([keep, gate].filter(alive)).toHaveLength(2)
      fs.writeFileSync(path.join(sandbox, "go"), "")
      yield* AgentProcess.waitUntil("gate to end", () => !alive(gate))
      expect(alive(keep)).toBe(true)

      const second = yield* AgentProcess.startAgent(master.endpoint, dir, args)
      expect(yield* second.registered).toBe(agentId)
      const failed = yield* framework.await("gate FAILED", (s) => s.taskId === "gate" && s.state === TaskState.FAILED)
      expect(failed.exitCode).toBe(3)
      const killed = yield* framework.await("keep KILLED", (s) => s.taskId === "keep" && s.state === TaskState.KILLED)
      expect(killed.reason).toBe(Reason.EXECUTOR_TERMINATED)
      expect(killed.message).toMatch(/^Killed with its task group: task gate failed \(Command exited with status 3\)/)
      expect(framework.states("keep")).toEqual(["STAGING", "STARTING", "RUNNING", "KILLING", "KILLED"])
      expect(framework.states("gate")).toEqual(["STAGING", "STARTING", "RUNNING", "FAILED"])
      yield* AgentProcess.waitUntil("keep's process to be gone", () => !alive(keep), 5000)
      // Re-attached, not launched again: still one run of the executor.
      expect(fs.readdirSync(path.dirname(sandbox)).filter((n) => n !== "latest")).toHaveLength(1)
    }).pipe(Effect.provideService(References.MinimumLogLevel, "Error")), 60_000)
})
