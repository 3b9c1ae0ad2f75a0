/**
 * Tasks outlive the agent (issue 4, items 9 and 10): `berth agent` child processes are SIGKILLed
 * and restarted on the same work dir against an in-process master, and a test framework checks
 * what survives and what it is told.
 */
import { describe, expect, it } from "@effect/vitest"
import { Resources, TaskStates, v1 } from "@berth/proto"
import { Effect, References } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import * as MasterSupport from "./support/master.ts"
import {
  alive,
  hex,
  killAgent,
  launch,
  openFramework,
  sandbox,
  startAgent,
  taskPid,
  waitUntil,
  workDir
} from "./support/agentProcess.ts"
import { descendants } from "./support/processes.ts"
import { Operator } from "@berth/testkit"

const { TaskState, TaskStatus_Reason: Reason } = v1

const task = (taskId: string, command: string, extra: Partial<v1.TaskInfo> = {}) =>
  v1.TaskInfo.create({ taskId, name: taskId, resources: [Resources.scalar("cpus", 0.1)], command: { shell: true, value: command }, ...extra })

/** A task that runs until the test creates the file `go` in its sandbox, then exits with `code`. */
const gated = (taskId: string, code: number) => task(taskId, `echo $$ > pid; while [ ! -f go ]; do sleep 0.05; done; exit ${code}`)

const operatorState = (master: string) => Effect.scoped(Effect.flatMap(Operator.make(master), (o) => o.state))

/** Run directories of an executor (the sandbox's `runs/` less the `latest` link). */
const runsOf = (dir: string, frameworkId: string, taskId: string) =>
  fs.readdirSync(path.dirname(sandbox(dir, frameworkId, taskId))).filter((name) => name !== "latest")

describe("agent checkpoint and recovery", () => {
  it.live("SIGKILLed with 20 running tasks and restarted: all 20 still RUNNING (same pids), no duplicate launch, updates in order; one that exited meanwhile is reported with its exit code", () =>
    Effect.gen(function*() {
      const dir = yield* workDir("berth-recover-")
      const master = yield* MasterSupport.start()
      const first = yield* startAgent(master.endpoint, dir, ["--status-update-retry-min", "0.5"])
      const agentId = yield* first.registered
      const framework = yield* openFramework(master.endpoint)
      const ids = Array.from({ length: 20 }, (_, i) => `t-${i}`)
      const tasks = [
        // Ignores SIGTERM: its kill after the restart must still get to SIGKILL.
        task("t-0", "trap '' TERM; echo $$ > pid; sleep 300 & wait", { killPolicy: { gracePeriodSeconds: 0.5 } }),
        ...ids.slice(1).map((id) => task(id, "echo $$ > pid; exec sleep 300")),
        gated("exits-3", 3)
      ]
      yield* framework.session.accept([(yield* framework.nextOffer).offerId], [launch(tasks)])
      for (const id of [...ids, "exits-3"]) yield* framework.await(`${id} RUNNING`, (s) => s.taskId === id && s.state === TaskState.RUNNING)
      const pids = new Map<string, number>()
      for (const id of [...ids, "exits-3"]) pids.set(id, yield* taskPid(dir, framework.frameworkId, id))

      yield* killAgent(first)
      // Tasks are not the agent's children: they outlive it.
      expect([...pids.values()].filter(alive)).toHaveLength(21)
      fs.writeFileSync(path.join(sandbox(dir, framework.frameworkId, "exits-3"), "go"), "")
      yield* waitUntil("exits-3 to end", () => !alive(pids.get("exits-3")!))

      const second = yield* startAgent(master.endpoint, dir, ["--status-update-retry-min", "0.5"])
      expect(yield* second.registered).toBe(agentId)
      const failed = yield* framework.await("exits-3 FAILED", (s) => s.taskId === "exits-3" && s.state === TaskState.FAILED)
      expect(failed.exitCode).toBe(3)
      expect(failed.message).toBe("Command exited with status 3")
      expect(failed.reason).toBe(Reason.COMMAND_EXECUTOR_FAILED)
      expect(failed.agentId).toBe(agentId)

      // All 20 still run, as the same processes, re-attached rather than launched again.
      for (const id of ids) {
        expect(alive(pids.get(id)!), id).toBe(true)
        expect(Number(fs.readFileSync(path.join(sandbox(dir, framework.frameworkId, id), "pid"), "utf8")), id).toBe(pids.get(id))
        expect(runsOf(dir, framework.frameworkId, id), id).toHaveLength(1)
      }
      // No agent process in between: the tasks' parents are gone (not a Node process per task).
      expect(descendants(second.child.pid!)).toEqual([])
      const state = yield* operatorState(master.endpoint)
      expect(state.agents.map((a) => a.info?.agentId)).toEqual([agentId])
      const running = state.tasks.filter((t) => t.state === TaskState.RUNNING).map((t) => t.info?.taskId).sort()
      expect(running).toEqual([...ids].sort())
      // Every update once (by uuid), in order, none lost.
      for (const id of ids) expect(framework.states(id), id).toEqual(["STAGING", "STARTING", "RUNNING"])
      expect(framework.states("exits-3")).toEqual(["STAGING", "STARTING", "RUNNING", "FAILED"])

      // A re-attached task is killed like any other: SIGTERM to its group, SIGKILL after its grace.
      const group = descendants(pids.get("t-0")!)
      expect(group.length).toBeGreaterThan(0)
      yield* framework.session.kill("t-0")
      const killed = yield* framework.await("t-0 KILLED", (s) => s.taskId === "t-0" && s.state === TaskState.KILLED)
      expect(killed.message).toBe("Command terminated with signal SIGKILL")
      expect(framework.states("t-0")).toEqual(["STAGING", "STARTING", "RUNNING", "KILLING", "KILLED"])
      yield* waitUntil("t-0's processes to be gone", () => ![pids.get("t-0")!, ...group].some(alive), 5000)
      expect(alive(pids.get("t-1")!)).toBe(true)
    }).pipe(Effect.provideService(References.MinimumLogLevel, "Error")), 60_000)

  it.live("an update is checkpointed before it is sent: killed before the acknowledgement, the agent resends after its restart, in order", () =>
    Effect.gen(function*() {
      const dir = yield* workDir("berth-recover-")
      const master = yield* MasterSupport.start()
      const args = ["--status-update-retry-min", "0.2", "--status-update-retry-max", "0.4"]
      const first = yield* startAgent(master.endpoint, dir, args)
      yield* first.registered
      const framework = yield* openFramework(master.endpoint)
      // The scheduler acknowledges STARTING, and nothing after it until the agent was restarted.
      framework.setAckPolicy((s) => s.state === TaskState.STAGING || s.state === TaskState.STARTING)
      yield* framework.session.accept([(yield* framework.nextOffer).offerId], [launch([gated("quick", 0)])])
      const running = yield* framework.await("RUNNING", (s) => s.taskId === "quick" && s.state === TaskState.RUNNING)
      // Unacknowledged, it is sent again, with backoff.
      yield* framework.await("RUNNING again", (s) => s !== running && hex(s.uuid) === hex(running.uuid))

      // The task finishes: FINISHED is checkpointed, but waits behind RUNNING and is never sent.
      const run = sandbox(dir, framework.frameworkId, "quick")
      fs.writeFileSync(path.join(run, "go"), "")
      const log = path.join(dir, "meta", "frameworks", framework.frameworkId, "executors", "quick", "runs", fs.readlinkSync(run), "updates")
      yield* waitUntil("FINISHED in the update log", () => fs.readFileSync(log, "utf8").includes("TASK_STATE_FINISHED"))
      yield* killAgent(first)
      expect(framework.updates.some((s) => s.state === TaskState.FINISHED)).toBe(false)

      framework.setAckPolicy(() => true)
      const second = yield* startAgent(master.endpoint, dir, args)
      yield* second.registered
      const finished = yield* framework.await("FINISHED", (s) => s.taskId === "quick" && s.state === TaskState.FINISHED)
      expect(finished.exitCode).toBe(0)
      // The same RUNNING (same uuid) came first again, then FINISHED: nothing lost, nothing reordered.
      const uuids = framework.updates.filter((s) => s.taskId === "quick").map((s) => `${TaskStates.name(s.state)}:${hex(s.uuid)}`)
      const lastRunning = uuids.lastIndexOf(`RUNNING:${hex(running.uuid)}`)
      expect(lastRunning).toBeGreaterThan(0)
      expect(uuids.indexOf(`FINISHED:${hex(finished.uuid)}`)).toBeGreaterThan(lastRunning)
      expect(framework.states("quick")).toEqual(["STAGING", "STARTING", "RUNNING", "FINISHED"])
      const state = yield* operatorState(master.endpoint)
      expect(state.tasks.find((t) => t.info?.taskId === "quick")?.state).toBe(TaskState.FINISHED)
    }).pipe(Effect.provideService(References.MinimumLogLevel, "Error")), 30_000)

  it.live("GC removes an acknowledged sandbox after --gc-delay, also across an agent restart, and leaves the persistent volume", () =>
    Effect.gen(function*() {
      const dir = yield* workDir("berth-gc-")
      const master = yield* MasterSupport.start()
      const agent = yield* startAgent(master.endpoint, dir, ["--gc-delay", "1.5"])
      yield* agent.registered
      const framework = yield* openFramework(master.endpoint, "gc-test", ["gc"])
      const volume: v1.Resource = {
        ...Resources.scalar("disk", 64),
        disk: { persistence: { id: "gc-vol", principal: "" }, volume: { containerPath: "data", hostPath: "", mode: v1.Volume_Mode.RW } }
      }
      const offer = yield* framework.nextOffer
      const role = offer.allocationRole
      const reserved = (r: v1.Resource): v1.Resource => ({ ...r, reservations: [{ type: v1.ReservationInfo_Type.DYNAMIC, role, principal: "", labels: undefined }] })
      const disk = reserved(Resources.scalar("disk", 64))
      const cpus = reserved(Resources.scalar("cpus", 0.1))
      const vol = reserved(volume)
      yield* framework.session.accept([offer.offerId], [
        { operationId: "", kind: { $case: "reserve", value: { resources: [cpus, disk] } } },
        { operationId: "", kind: { $case: "create", value: { volumes: [vol] } } },
        launch([task("writer", "echo kept > data/file; echo out", { resources: [cpus, vol] })])
      ])
      yield* framework.await("writer FINISHED", (s) => s.taskId === "writer" && s.state === TaskState.FINISHED)
      const run = fs.realpathSync(sandbox(dir, framework.frameworkId, "writer"))
      const runId = path.basename(run)
      const checkpoint = path.join(dir, "meta", "frameworks", framework.frameworkId, "executors", "writer", "runs", runId)
      const volumeFile = path.join(dir, "volumes", "roles", encodeURIComponent(role), "gc-vol", "file")
      // Kept until the delay has passed.
      expect(fs.readFileSync(path.join(run, "stdout"), "utf8")).toBe("out\n")
      expect(fs.existsSync(checkpoint)).toBe(true)
      // The acknowledgement of FINISHED is checkpointed: the next agent knows when the delay ends.
      const log = path.join(checkpoint, "updates")
      yield* waitUntil("three acknowledgements in the log", () => fs.readFileSync(log, "utf8").split('"ack"').length === 4)
      yield* killAgent(agent)
      // Still there: the restarted agent is the one to collect it.
      expect(fs.existsSync(run)).toBe(true)
      const restarted = yield* startAgent(master.endpoint, dir, ["--gc-delay", "1.5"])
      yield* restarted.registered
      yield* waitUntil("the sandbox to be collected", () => !fs.existsSync(run), 10_000)
      yield* waitUntil("the checkpoint to be collected", () => !fs.existsSync(checkpoint), 5000)
      expect(fs.existsSync(path.join(dir, "frameworks", framework.frameworkId))).toBe(false)
      // The volume and its data are untouched.
      expect(fs.readFileSync(volumeFile, "utf8")).toBe("kept\n")
    }).pipe(Effect.provideService(References.MinimumLogLevel, "Error")), 30_000)

  it.live("--recover=cleanup kills what the previous agent left and starts without tasks (the master reports them GONE)", () =>
    Effect.gen(function*() {
      const dir = yield* workDir("berth-cleanup-")
      const master = yield* MasterSupport.start()
      const first = yield* startAgent(master.endpoint, dir)
      const agentId = yield* first.registered
      const framework = yield* openFramework(master.endpoint)
      yield* framework.session.accept([(yield* framework.nextOffer).offerId], [
        launch([task("left-1", "echo $$ > pid; sleep 300 & wait"), task("left-2", "echo $$ > pid; exec sleep 300")])
      ])
      const pids: Array<number> = []
      for (const id of ["left-1", "left-2"]) {
        yield* framework.await(`${id} RUNNING`, (s) => s.taskId === id && s.state === TaskState.RUNNING)
        const pid = yield* taskPid(dir, framework.frameworkId, id)
        pids.push(pid, ...descendants(pid))
      }
      yield* killAgent(first)
      expect(pids.filter(alive)).toHaveLength(pids.length)

      const second = yield* startAgent(master.endpoint, dir, ["--recover", "cleanup"])
      expect(yield* second.registered).toBe(agentId)
      expect(pids.filter(alive)).toEqual([])
      for (const id of ["left-1", "left-2"]) {
        const gone = yield* framework.await(`${id} GONE`, (s) => s.taskId === id && s.state === TaskState.GONE)
        expect(gone.reason).toBe(Reason.AGENT_RESTARTED)
      }
      const state = yield* operatorState(master.endpoint)
      expect(state.tasks.filter((t) => t.state === TaskState.RUNNING)).toEqual([])
    }).pipe(Effect.provideService(References.MinimumLogLevel, "Error")), 30_000)
})
