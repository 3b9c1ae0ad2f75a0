import { describe, expect, it } from "@effect/vitest"
import { Resources, TaskStates, v1 } from "@berth/proto"
import * as grpc from "@grpc/grpc-js"
import { Effect, References } from "effect"
import * as fs from "node:fs"
import * as net from "node:net"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { killAgent, startAgent, waitUntil, workDir } from "./support/agentProcess.ts"
import { alive } from "./support/processes.ts"
import * as ScriptedMaster from "./support/scriptedMaster.ts"

const { TaskState } = v1
const Reason = v1.TaskStatus_Reason
const fixture = fileURLToPath(new URL("./fixtures/customExecutor.ts", import.meta.url))
const framework = v1.FrameworkInfo.create({ frameworkId: "f1", name: "custom-executor-test", roles: ["*"] })

/** The example executor program (test/fixtures/customExecutor.ts), run by Node 24 directly. */
const programExecutor = (executorId: string) =>
  v1.ExecutorInfo.create({
    type: v1.ExecutorInfo_Type.CUSTOM,
    executorId,
    frameworkId: "f1",
    // The program's own share (with cgroups, its limit is this plus its first task's).
    resources: [Resources.scalar("cpus", 1), Resources.scalar("mem", 256)],
    command: v1.CommandInfo.create({ shell: false, value: process.execPath, arguments: [process.execPath, fixture] })
  })

const task = (taskId: string, executor: v1.ExecutorInfo, data = "") =>
  v1.TaskInfo.create({
    name: taskId,
    taskId,
    resources: [Resources.scalar("cpus", 0.1)],
    executor,
    data: Buffer.from(data)
  })

const run = (master: ScriptedMaster.ScriptedMaster, ...tasks: Array<v1.TaskInfo>) =>
  master.send({ $case: "run", value: { tasks: tasks.map((task) => ({ framework, task })), taskGroups: [] } })

/**
 * The distinct updates of a task, in order: delivery is at least once (an update whose
 * acknowledgement the agent had not checkpointed when it was killed is sent again, with the same
 * uuid, and the master drops the copy), so copies are not counted.
 */
const states = (master: ScriptedMaster.ScriptedMaster, taskId: string) => {
  const seen = new Set<string>()
  return master.updates
    .filter((s) => s.taskId === taskId && !seen.has(Buffer.from(s.uuid).toString("hex")) && seen.add(Buffer.from(s.uuid).toString("hex")))
    .map((s) => TaskStates.name(s.state))
}

const sandboxOf = (dir: string, executorId: string) => path.join(dir, "frameworks", "f1", "executors", executorId, "runs", "latest")

const freePort = Effect.callback<number>((resume) => {
  const server = net.createServer()
  server.listen(0, "127.0.0.1", () => {
    const port = (server.address() as net.AddressInfo).port
    server.close(() => resume(Effect.succeed(port)))
  })
})

const quiet = Effect.provideService(References.MinimumLogLevel, "Warn")

describe("custom executors over gRPC", () => {
  it.live("the agent starts the framework's executor program, which reports RUNNING then FINISHED; it gets the executor environment", () =>
    Effect.gen(function*() {
      const dir = yield* workDir("berth-custom-")
      const master = yield* ScriptedMaster.start()
      const agent = yield* startAgent(master.endpoint, dir)
      yield* agent.registered
      run(master, task("t1", programExecutor("e1"), "finish"))
      const finished = yield* master.waitFor("t1 FINISHED", () => master.updates.find((s) => s.taskId === "t1" && s.state === TaskState.FINISHED))
      expect(states(master, "t1")).toEqual(["RUNNING", "FINISHED"])
      expect(finished.source).toBe(v1.TaskStatus_Source.EXECUTOR)
      expect(finished.executorId).toBe("e1")
      expect(finished.agentId).toBe("agent-1")

      const sandbox = fs.realpathSync(sandboxOf(dir, "e1"))
      const env = JSON.parse(fs.readFileSync(path.join(sandbox, "env.json"), "utf8")) as Record<string, string>
      expect(env.BERTH_FRAMEWORK_ID).toBe("f1")
      expect(env.BERTH_EXECUTOR_ID).toBe("e1")
      expect(env.BERTH_AGENT_ID).toBe("agent-1")
      expect(env.BERTH_SANDBOX).toBe(sandbox)
      expect(env.BERTH_AGENT_ENDPOINT).toMatch(/^127\.0\.0\.1:\d+$/)

      // With its only task acknowledged, the executor is shut down and exits cleanly.
      const exited = yield* master.waitFor("the executor's exit", () => master.executorsExited.find((e) => e.executorId === "e1"))
      expect(exited.status).toBe(0)
      expect(states(master, "t1")).toEqual(["RUNNING", "FINISHED"])
    }).pipe(quiet), 60_000)

  it.live("an executor that does not subscribe within the registration timeout is killed and its task fails with REASON_EXECUTOR_REGISTRATION_TIMEOUT", () =>
    Effect.gen(function*() {
      const dir = yield* workDir("berth-custom-")
      const master = yield* ScriptedMaster.start()
      const agent = yield* startAgent(master.endpoint, dir, ["--executor-registration-timeout", "1"])
      yield* agent.registered
      const silent = v1.ExecutorInfo.create({
        type: v1.ExecutorInfo_Type.CUSTOM,
        executorId: "silent",
        command: v1.CommandInfo.create({ shell: true, value: "echo $$ > executor.pid; exec sleep 300" })
      })
      run(master, task("t2", silent))
      const failed = yield* master.waitFor("t2 FAILED", () => master.updates.find((s) => s.taskId === "t2" && TaskStates.isTerminal(s.state)))
      expect(TaskStates.name(failed.state)).toBe("FAILED")
      expect(failed.reason).toBe(Reason.EXECUTOR_REGISTRATION_TIMEOUT)
      expect(failed.message).toContain("did not subscribe within 1 s")
      const pid = Number(fs.readFileSync(path.join(sandboxOf(dir, "silent"), "executor.pid"), "utf8"))
      yield* waitUntil("the silent executor to be gone", () => !alive(pid), 10_000)
      expect(states(master, "t2")).toEqual(["FAILED"])
    }).pipe(quiet), 60_000)

  it.live("framework messages go both ways: scheduler → executor → scheduler", () =>
    Effect.gen(function*() {
      const dir = yield* workDir("berth-custom-")
      const master = yield* ScriptedMaster.start()
      const agent = yield* startAgent(master.endpoint, dir)
      yield* agent.registered
      run(master, task("t3", programExecutor("e3")))
      yield* master.waitFor("t3 RUNNING", () => master.updates.find((s) => s.taskId === "t3" && s.state === TaskState.RUNNING))
      master.send({ $case: "frameworkMessage", value: { frameworkId: "f1", executorId: "e3", data: Buffer.from("ping:42") } })
      const pong = yield* master.waitFor("the executor's answer", () => master.executorMessages.find((m) => m.data.startsWith("pong:")))
      expect(pong).toEqual({ executorId: "e3", data: "pong:42" })
      master.send({ $case: "frameworkMessage", value: { frameworkId: "f1", executorId: "e3", data: Buffer.from("finish") } })
      yield* master.waitFor("t3 FINISHED", () => master.updates.find((s) => s.taskId === "t3" && s.state === TaskState.FINISHED))
      expect(states(master, "t3")).toEqual(["RUNNING", "FINISHED"])
    }).pipe(quiet), 60_000)

  it.live("after the agent is SIGKILLed and restarted, the executor subscribes again and its task keeps running", () =>
    Effect.gen(function*() {
      const dir = yield* workDir("berth-custom-")
      const master = yield* ScriptedMaster.start()
      const port = String(yield* freePort)
      const first = yield* startAgent(master.endpoint, dir, ["--port", port])
      yield* first.registered
      // RUNNING stays unacknowledged until the agent is restarted: the new agent must send it again.
      master.setAcknowledging(false)
      run(master, task("t4", programExecutor("e4")))
      yield* master.waitFor("t4 RUNNING", () => master.updates.find((s) => s.taskId === "t4" && s.state === TaskState.RUNNING))
      const pid = Number(fs.readFileSync(path.join(sandboxOf(dir, "e4"), "executor.pid"), "utf8"))
      expect(alive(pid)).toBe(true)

      yield* killAgent(first)
      expect(alive(pid)).toBe(true)
      master.setAcknowledging(true)
      const before = master.updates.length
      const second = yield* startAgent(master.endpoint, dir, ["--port", port, "--status-update-retry-min", "1"])
      yield* second.registered
      // The restarted agent reports the task it re-attached to.
      expect(master.registrations.at(-1)?.map((r) => r.task?.taskId)).toEqual(["t4"])

      // The same executor process answers through the new agent: it subscribed again.
      master.send({ $case: "frameworkMessage", value: { frameworkId: "f1", executorId: "e4", data: Buffer.from("ping:after-restart") } })
      const pong = yield* master.waitFor("the executor's answer after the restart", () =>
        master.executorMessages.find((m) => m.data === "pong:after-restart"))
      expect(pong.executorId).toBe("e4")
      expect(alive(pid)).toBe(true)
      // RUNNING came again from the new agent (the same update: same uuid), was acknowledged this
      // time, and is sent no more (the new agent would retry every second).
      const resent = () => master.updates.slice(before).filter((s) => s.taskId === "t4")
      expect(new Set(resent().map((s) => Buffer.from(s.uuid).toString("hex")))).toEqual(new Set([Buffer.from(master.updates[0]!.uuid).toString("hex")]))
      const copies = resent().length
      yield* Effect.sleep("3 seconds")
      expect(resent()).toHaveLength(copies)
      expect(states(master, "t4")).toEqual(["RUNNING"])

      master.send({ $case: "frameworkMessage", value: { frameworkId: "f1", executorId: "e4", data: Buffer.from("finish") } })
      yield* master.waitFor("t4 FINISHED", () => master.updates.find((s) => s.taskId === "t4" && s.state === TaskState.FINISHED))
      // Exactly one terminal update, nothing launched twice.
      expect(states(master, "t4")).toEqual(["RUNNING", "FINISHED"])
      yield* waitUntil("the executor to exit after its last task", () => !alive(pid), 15_000)
    }).pipe(quiet), 90_000)

  it.live("the executor protocol: each update taken once, one terminal update per task, unknown tasks refused; SHUTDOWN once all is acknowledged, and a program that stays is killed", () =>
    Effect.gen(function*() {
      const dir = yield* workDir("berth-custom-")
      const master = yield* ScriptedMaster.start()
      const agent = yield* startAgent(master.endpoint, dir)
      yield* agent.registered
      // The program only sleeps: the test speaks the executor protocol in its place.
      const sleeper = v1.ExecutorInfo.create({
        type: v1.ExecutorInfo_Type.CUSTOM,
        executorId: "raw",
        command: v1.CommandInfo.create({ shell: true, value: "env > env.txt; exec sleep 300" })
      })
      run(master, task("t5", sleeper))
      const envFile = path.join(sandboxOf(dir, "raw"), "env.txt")
      yield* waitUntil("the program's environment", () => fs.existsSync(envFile) && fs.readFileSync(envFile, "utf8").includes("BERTH_SANDBOX"))
      const endpoint = /^BERTH_AGENT_ENDPOINT=(.*)$/m.exec(fs.readFileSync(envFile, "utf8"))![1]!
      const client = new v1.ExecutorServiceClient(endpoint, grpc.credentials.createInsecure())
      const events: Array<string> = []
      let ended = false
      const stream = client.subscribe({ frameworkId: "f1", executorId: "raw", unacknowledgedTasks: [], unacknowledgedUpdates: [] })
      stream.on("data", (response: v1.ExecutorServiceSubscribeResponse) => events.push(response.event?.$case ?? "?"))
      stream.on("end", () => (ended = true))
      stream.on("error", () => (ended = true))
      yield* waitUntil("SUBSCRIBED and LAUNCH", () => events.length >= 2)
      expect(events.slice(0, 2)).toEqual(["subscribed", "launch"])

      const status = (state: v1.TaskState, byte: number, taskId = "t5") =>
        v1.TaskStatus.create({ taskId, state, uuid: Buffer.alloc(16, byte), source: v1.TaskStatus_Source.EXECUTOR })
      const update = (...statuses: Array<v1.TaskStatus>) =>
        Effect.callback<grpc.ServiceError | null>((resume) => {
          client.update({ frameworkId: "f1", executorId: "raw", statuses }, (error) => resume(Effect.succeed(error)))
        })
      expect(yield* update(status(v1.TaskState.RUNNING, 1))).toBeNull()
      // Sent again (say, after a reconnection): taken once.
      expect(yield* update(status(v1.TaskState.RUNNING, 1))).toBeNull()
      expect(yield* update(status(v1.TaskState.FINISHED, 2), status(v1.TaskState.FAILED, 3))).toBeNull()
      const unknown = yield* update(status(v1.TaskState.RUNNING, 4, "nobody-gave-me-this"))
      expect(unknown?.code).toBe(grpc.status.INVALID_ARGUMENT)
      expect(unknown?.metadata.get("berth-field")).toEqual(["statuses[0].taskId"])

      yield* master.waitFor("t5 FINISHED", () => master.updates.find((s) => s.taskId === "t5" && s.state === TaskState.FINISHED))
      expect(master.updates.filter((s) => s.taskId === "t5").map((s) => TaskStates.name(s.state))).toEqual(["RUNNING", "FINISHED"])
      // Its only task acknowledged, the executor is told to shut down and its stream ends...
      yield* waitUntil("SHUTDOWN and the end of the stream", () => events.includes("shutdown") && ended)
      // ...and the program, which does not exit, is killed after the grace period.
      yield* master.waitFor("the program's end", () => master.executorsExited.find((e) => e.executorId === "raw"), 20_000)
      client.close()
    }).pipe(quiet), 60_000)
})
