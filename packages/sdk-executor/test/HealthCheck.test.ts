import * as fs from "node:fs"
import * as path from "node:path"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit } from "effect"
import { TestClock } from "effect/testing"
import { v1 } from "@berth/proto"
import { httpServer, reply, tcpServer } from "./fixtures.ts"
import { groupMembers, startExecutor, states, taskPid, waitFor } from "./harness.ts"

const { HealthCheck_Type: CheckType, TaskStatus_Reason: Reason } = v1

/** Real-time pause that works whether or not the test clock is installed. */
const pause = (ms: number) => Effect.promise(() => new Promise<void>((resolve) => setTimeout(resolve, ms)))

/** A long-running task (its shell writes its pid, then becomes `sleep`) with the given checks. */
const service = (taskId: string, checks: Partial<Pick<v1.TaskInfo, "healthCheck" | "check">>, extra: Partial<v1.TaskInfo> = {}) =>
  v1.TaskInfo.create({
    taskId,
    command: { shell: true, value: "echo $$ > pid; exec sleep 60", ...extra.command },
    killPolicy: { gracePeriodSeconds: 5 },
    ...checks
  })

/** Short real-time timings for the checks of the real-time tests. */
const fast = { delaySeconds: 0.05, intervalSeconds: 0.1, timeoutSeconds: 1, gracePeriodSeconds: 0.01 }

const http = (port: number, extra: Partial<v1.HealthCheck> = {}): v1.HealthCheck =>
  v1.HealthCheck.create({ type: CheckType.HTTP, http: { port, path: "/health" }, ...extra })

describe("CommandExecutor health checks (real time)", () => {
  it.live("HTTP: healthy, then unhealthy, then killed after consecutive_failures in a row", () =>
    Effect.gen(function*() {
      const server = yield* httpServer
      server.route("/health", reply(200, "ok"))
      const executor = yield* startExecutor()
      yield* executor.launch(service("http-hc", { healthCheck: http(server.port, { ...fast, consecutiveFailures: 2 }) }))
      const pgid = yield* taskPid(executor.sandbox)
      const healthy = yield* executor.nth(3)
      expect(states(executor.statuses)).toEqual(["STARTING", "RUNNING", "RUNNING"])
      expect(executor.statuses[1]!.healthy).toBeUndefined()
      expect(healthy.healthy).toBe(true)
      expect(healthy.reason).toBe(Reason.TASK_HEALTH_CHECK_STATUS_UPDATED)
      expect(healthy.message).toBe(`Health check passed (HTTP GET http://127.0.0.1:${server.port}/health)`)
      // Passing again is no change: no update, though the checks go on.
      yield* waitFor("more checks", () => server.hits("/health") >= 3)
      expect(executor.statuses).toHaveLength(3)

      server.route("/health", reply(503, "down"))
      yield* executor.done()
      expect(states(executor.statuses)).toEqual(["STARTING", "RUNNING", "RUNNING", "RUNNING", "KILLING", "KILLED"])
      const [, , , unhealthy, killing, killed] = executor.statuses
      expect(unhealthy!.healthy).toBe(false)
      expect(unhealthy!.reason).toBe(Reason.TASK_HEALTH_CHECK_STATUS_UPDATED)
      expect(unhealthy!.message).toBe(`Health check failed (HTTP GET http://127.0.0.1:${server.port}/health): HTTP status 503`)
      const why = `Task killed after 2 consecutive failed health checks (HTTP GET http://127.0.0.1:${server.port}/health); ` +
        "last failure: HTTP status 503"
      expect(killing!.healthy).toBe(false)
      expect(killing!.reason).toBe(Reason.TASK_HEALTH_CHECK_STATUS_UPDATED)
      expect(killing!.message).toBe(why)
      expect(killed!.healthy).toBe(false)
      expect(killed!.reason).toBe(Reason.TASK_HEALTH_CHECK_STATUS_UPDATED)
      expect(killed!.message).toBe(`${why}. Command terminated with signal SIGTERM`)
      expect(groupMembers(pgid)).toEqual([])
    }))

  it.live("HTTP: only the given statuses count as healthy", () =>
    Effect.gen(function*() {
      const server = yield* httpServer
      server.route("/health", reply(204))
      const executor = yield* startExecutor()
      yield* executor.launch(service("http-statuses", {
        healthCheck: http(server.port, { ...fast, consecutiveFailures: 1, http: { scheme: "http", port: server.port, path: "/health", statuses: [200] } })
      }))
      // 204 is in the default 200-399, but not in the task's list.
      yield* executor.done()
      expect(states(executor.statuses)).toEqual(["STARTING", "RUNNING", "RUNNING", "KILLING", "KILLED"])
      expect(executor.statuses[2]!.healthy).toBe(false)
      expect(executor.statuses[2]!.message).toContain("HTTP status 204")
    }))

  it.live("TCP: healthy while the port accepts, killed once it refuses", () =>
    Effect.gen(function*() {
      const server = yield* tcpServer
      const executor = yield* startExecutor()
      yield* executor.launch(service("tcp-hc", {
        healthCheck: v1.HealthCheck.create({ type: CheckType.TCP, tcp: { port: server.port }, ...fast, consecutiveFailures: 3 })
      }))
      expect((yield* executor.nth(3)).healthy).toBe(true)
      expect(executor.statuses[2]!.message).toBe(`Health check passed (TCP connect to 127.0.0.1:${server.port})`)
      yield* waitFor("a few connections", () => server.connections() >= 3)
      yield* Effect.promise(server.close)
      yield* executor.done()
      expect(states(executor.statuses)).toEqual(["STARTING", "RUNNING", "RUNNING", "RUNNING", "KILLING", "KILLED"])
      expect(executor.statuses[3]!.healthy).toBe(false)
      expect(executor.statuses[3]!.message).toContain("ECONNREFUSED")
      expect(executor.statuses[5]!.message).toContain("Task killed after 3 consecutive failed health checks (TCP connect")
      expect(executor.statuses[5]!.healthy).toBe(false)
    }))

  it.live("COMMAND: runs in the sandbox with the task's environment; fails when it exits non-zero", () =>
    Effect.gen(function*() {
      const executor = yield* startExecutor({ env: { FROM_AGENT: "agent" } })
      yield* executor.launch(service("cmd-hc", {
        healthCheck: v1.HealthCheck.create({
          type: CheckType.COMMAND,
          command: {
            shell: true,
            value: "test -f \"$FLAG\" && echo \"$BERTH_TASK_ID $FROM_AGENT $CHECK_ONLY\" > check-ran",
            environment: [{ name: "CHECK_ONLY", value: "check-var" }]
          },
          ...fast,
          gracePeriodSeconds: 5,
          consecutiveFailures: 2
        })
      }, { command: v1.CommandInfo.create({ shell: true, value: "echo $$ > pid; exec sleep 60", environment: [{ name: "FLAG", value: "healthy-flag" }] }) }))
      yield* taskPid(executor.sandbox)
      // Failing within the grace period and never healthy yet: ignored. Then the file appears.
      yield* pause(300)
      fs.writeFileSync(path.join(executor.sandbox, "healthy-flag"), "")
      expect((yield* executor.nth(3)).healthy).toBe(true)
      expect(fs.readFileSync(path.join(executor.sandbox, "check-ran"), "utf8")).toBe("cmd-hc agent check-var\n")
      fs.rmSync(path.join(executor.sandbox, "healthy-flag"))
      yield* executor.done()
      expect(states(executor.statuses)).toEqual(["STARTING", "RUNNING", "RUNNING", "RUNNING", "KILLING", "KILLED"])
      expect(executor.statuses[3]!.message).toBe(
        "Health check failed (command 'test -f \"$FLAG\" && echo \"$BERTH_TASK_ID $FROM_AGENT $CHECK_ONLY\" > check-ran'): " +
          "Command exited with status 1"
      )
    }))

  it.live("COMMAND: a check that outlives its timeout fails and its processes are killed", () =>
    Effect.gen(function*() {
      const executor = yield* startExecutor()
      yield* executor.launch(service("cmd-timeout", {
        healthCheck: v1.HealthCheck.create({
          type: CheckType.COMMAND,
          command: { shell: true, value: "echo $$ >> check-pids; sleep 30 & wait" },
          ...fast,
          timeoutSeconds: 0.3,
          consecutiveFailures: 1
        })
      }))
      yield* executor.done()
      expect(states(executor.statuses)).toEqual(["STARTING", "RUNNING", "RUNNING", "KILLING", "KILLED"])
      expect(executor.statuses[2]!.message).toContain("timed out after 300ms")
      const checkPids = fs.readFileSync(path.join(executor.sandbox, "check-pids"), "utf8").trim().split("\n").map(Number)
      expect(checkPids).toHaveLength(1)
      yield* waitFor("the check's group to be gone", () => groupMembers(checkPids[0]!).length === 0, 1_000)
    }))

  it.live("readiness (task.check): `ready` on RUNNING updates at each change, and it never kills", () =>
    Effect.gen(function*() {
      const server = yield* httpServer
      server.route("/ready", reply(503))
      const executor = yield* startExecutor()
      yield* executor.launch(service("ready-1", {
        check: v1.HealthCheck.create({ type: CheckType.HTTP, http: { port: server.port, path: "/ready" }, ...fast })
      }))
      const notReady = yield* executor.nth(3)
      expect(notReady.ready).toBe(false)
      expect(notReady.healthy).toBeUndefined()
      expect(notReady.reason).toBe(Reason.TASK_CHECK_STATUS_UPDATED)
      expect(notReady.message).toBe(`Readiness check failed (HTTP GET http://127.0.0.1:${server.port}/ready): HTTP status 503`)
      server.route("/ready", reply(200))
      expect((yield* executor.nth(4)).ready).toBe(true)
      server.route("/ready", reply(500))
      expect((yield* executor.nth(5)).ready).toBe(false)
      // Many failures later the task still runs: readiness only reports.
      const hits = server.hits("/ready")
      yield* waitFor("five more failed checks", () => server.hits("/ready") >= hits + 5)
      expect(states(executor.statuses)).toEqual(["STARTING", "RUNNING", "RUNNING", "RUNNING", "RUNNING"])
      yield* executor.kill("ready-1")
      yield* executor.done()
      expect(states(executor.statuses).slice(5)).toEqual(["KILLING", "KILLED"])
      expect(executor.statuses[6]!.reason).toBe(Reason.KILLED_BY_SCHEDULER)
    }))

  it.live("an invalid check is ERROR (TASK_INVALID) naming the field", () =>
    Effect.gen(function*() {
      const cases = [
        [{ healthCheck: v1.HealthCheck.create({ type: CheckType.HTTP }) }, "health_check.http.port: must be between 1 and 65535"],
        [{ healthCheck: v1.HealthCheck.create({ type: CheckType.UNSPECIFIED }) }, "health_check.type: must be COMMAND, HTTP or TCP"],
        [{ check: v1.HealthCheck.create({ type: CheckType.COMMAND }) }, "check.command.value: a COMMAND check needs a command"],
        [
          { healthCheck: v1.HealthCheck.create({ type: CheckType.TCP, tcp: { port: 80 }, intervalSeconds: -1 }) },
          "health_check.interval_seconds: must be a finite number of seconds"
        ]
      ] as const
      for (const [checks, expected] of cases) {
        const executor = yield* startExecutor()
        yield* executor.launch(service("invalid-check", checks))
        expect(Exit.isSuccess(yield* executor.done())).toBe(true)
        expect(states(executor.statuses)).toEqual(["ERROR"])
        expect(executor.statuses[0]!.reason).toBe(Reason.TASK_INVALID)
        expect(executor.statuses[0]!.message).toContain(expected)
      }
    }))
})

describe("CommandExecutor health checks (Effect clock)", () => {
  it.effect("fields left at 0 take the Mesos defaults: delay 15 s, interval 10 s, 3 failures in a row", () =>
    Effect.gen(function*() {
      const server = yield* httpServer
      server.route("/health", reply(200))
      const executor = yield* startExecutor()
      yield* executor.launch(service("defaults", { healthCheck: http(server.port) }))
      yield* executor.nth(2)
      yield* pause(100)
      // Nothing before the 15 s delay, however long we wait in real time.
      yield* TestClock.adjust("14900 millis")
      yield* pause(200)
      expect(server.hits("/health")).toBe(0)
      yield* TestClock.adjust("100 millis")
      expect((yield* executor.nth(3)).healthy).toBe(true)
      expect(server.hits("/health")).toBe(1)

      // The next check is 10 s later, not before.
      yield* pause(50)
      yield* TestClock.adjust("9900 millis")
      yield* pause(200)
      expect(server.hits("/health")).toBe(1)
      yield* TestClock.adjust("100 millis")
      yield* waitFor("the second check", () => server.hits("/health") === 2)

      // Failures 1 and 2 make the task unhealthy; only the third in a row kills it.
      server.route("/health", reply(503))
      yield* pause(50)
      yield* TestClock.adjust("10 seconds")
      expect((yield* executor.nth(4)).healthy).toBe(false)
      yield* pause(50)
      yield* TestClock.adjust("10 seconds")
      yield* waitFor("the second failure", () => server.hits("/health") === 4)
      yield* pause(200)
      expect(states(executor.statuses)).toEqual(["STARTING", "RUNNING", "RUNNING", "RUNNING"])
      yield* TestClock.adjust("10 seconds")
      expect(states([yield* executor.nth(5)])).toEqual(["KILLING"])
      expect(executor.statuses[4]!.message).toContain("Task killed after 3 consecutive failed health checks")
      expect(states([yield* executor.nth(6)])).toEqual(["KILLED"])
    }))

  it.effect("failures within the grace period are ignored while the task was never healthy", () =>
    Effect.gen(function*() {
      const server = yield* httpServer
      server.route("/health", reply(503))
      const executor = yield* startExecutor()
      yield* executor.launch(service("grace", {
        healthCheck: http(server.port, { delaySeconds: 1, intervalSeconds: 1, gracePeriodSeconds: 5, consecutiveFailures: 1 })
      }))
      yield* executor.nth(2)
      yield* pause(100)
      for (let second = 1; second <= 4; second++) {
        yield* TestClock.adjust("1 second")
        yield* waitFor(`check #${second}`, () => server.hits("/health") === second)
        yield* pause(50)
      }
      // Four failures with a limit of one, all inside the 5 s grace period: nothing happened.
      expect(states(executor.statuses)).toEqual(["STARTING", "RUNNING"])
      yield* TestClock.adjust("1 second")
      expect((yield* executor.nth(3)).healthy).toBe(false)
      expect(states([yield* executor.nth(4)])).toEqual(["KILLING"])
      expect(states([yield* executor.nth(5)])).toEqual(["KILLED"])
    }))

  it.effect("once healthy, failures count even within the grace period", () =>
    Effect.gen(function*() {
      const server = yield* httpServer
      server.route("/health", reply(200))
      const executor = yield* startExecutor()
      yield* executor.launch(service("grace-healthy", {
        healthCheck: http(server.port, { delaySeconds: 1, intervalSeconds: 1, gracePeriodSeconds: 100, consecutiveFailures: 2 })
      }))
      yield* executor.nth(2)
      yield* pause(100)
      yield* TestClock.adjust("1 second")
      expect((yield* executor.nth(3)).healthy).toBe(true)
      server.route("/health", reply(503))
      yield* pause(50)
      yield* TestClock.adjust("1 second")
      expect((yield* executor.nth(4)).healthy).toBe(false)
      yield* pause(50)
      yield* TestClock.adjust("1 second")
      expect(states([yield* executor.nth(5)])).toEqual(["KILLING"])
      expect(executor.statuses[4]!.reason).toBe(Reason.TASK_HEALTH_CHECK_STATUS_UPDATED)
    }))
})
