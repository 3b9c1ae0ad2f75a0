import { type ChildProcess, spawn } from "node:child_process"
import * as http from "node:http"
import * as https from "node:https"
import * as net from "node:net"
import { Clock, Duration, Effect } from "effect"
import { v1 } from "@berth/proto"
import { describeTermination, spawnAsUser, type User } from "./process.ts"

const { HealthCheck_Type: CheckType } = v1

/**
 * The Mesos defaults, used for every field left at 0 (proto3 cannot tell 0 from unset). From
 * shared/reference/mesos-dcos-commons-fenzo.md §1.13 (Mesos docs/health-checks.md, mesos.proto
 * `HealthCheck`): delay_seconds 15, interval_seconds 10, timeout_seconds 20,
 * consecutive_failures 3, grace_period_seconds 10. Mesos' generalized checks (`CheckInfo`, our
 * readiness `check`) use the same delay, interval and timeout and have no grace period or
 * failure limit.
 */
export const DEFAULTS = {
  delaySeconds: 15,
  intervalSeconds: 10,
  timeoutSeconds: 20,
  consecutiveFailures: 3,
  gracePeriodSeconds: 10
} as const

export interface Timings {
  readonly delay: Duration.Duration
  readonly interval: Duration.Duration
  readonly timeout: Duration.Duration
  readonly grace: Duration.Duration
  readonly consecutiveFailures: number
}

const seconds = (value: number, fallback: number): Duration.Duration =>
  Duration.millis(Math.round((value > 0 ? value : fallback) * 1000))

export const timings = (check: v1.HealthCheck): Timings => ({
  delay: seconds(check.delaySeconds, DEFAULTS.delaySeconds),
  interval: seconds(check.intervalSeconds, DEFAULTS.intervalSeconds),
  timeout: seconds(check.timeoutSeconds, DEFAULTS.timeoutSeconds),
  grace: seconds(check.gracePeriodSeconds, DEFAULTS.gracePeriodSeconds),
  consecutiveFailures: check.consecutiveFailures > 0 ? check.consecutiveFailures : DEFAULTS.consecutiveFailures
})

const validPort = (port: number) => Number.isInteger(port) && port >= 1 && port <= 65535

/** Why `check` (the task's `field`: "health_check" or "check") cannot run, naming field and rule. */
export const checkProblem = (check: v1.HealthCheck, field: string): string | undefined => {
  for (const key of ["delaySeconds", "intervalSeconds", "timeoutSeconds", "gracePeriodSeconds"] as const) {
    const value = check[key]
    if (!Number.isFinite(value) || value < 0) {
      const name = key.replace(/[A-Z]/g, (letter) => `_${letter.toLowerCase()}`)
      return `${field}.${name}: must be a finite number of seconds, not negative (0 means the default)`
    }
  }
  switch (check.type) {
    case CheckType.COMMAND: {
      if (check.command === undefined || check.command.value === "") {
        return `${field}.command.value: a COMMAND check needs a command`
      }
      return undefined
    }
    case CheckType.HTTP: {
      const spec = check.http
      if (spec === undefined || !validPort(spec.port)) return `${field}.http.port: must be between 1 and 65535`
      if (spec.scheme !== "" && spec.scheme !== "http" && spec.scheme !== "https") {
        return `${field}.http.scheme: must be "http" or "https"`
      }
      if (spec.path !== "" && !spec.path.startsWith("/")) return `${field}.http.path: must start with "/"`
      if (spec.statuses.some((status) => !Number.isInteger(status) || status < 100 || status > 599)) {
        return `${field}.http.statuses: must be HTTP status codes (100-599)`
      }
      return undefined
    }
    case CheckType.TCP: {
      if (check.tcp === undefined || !validPort(check.tcp.port)) return `${field}.tcp.port: must be between 1 and 65535`
      return undefined
    }
    default:
      return `${field}.type: must be COMMAND, HTTP or TCP`
  }
}

/** What the check does, for status messages: "HTTP GET http://127.0.0.1:8080/health". */
export const describeCheck = (check: v1.HealthCheck): string => {
  switch (check.type) {
    case CheckType.COMMAND: {
      const command = check.command!
      const text = command.shell ? command.value : [command.value, ...command.arguments.slice(1)].join(" ")
      return `command '${text}'`
    }
    case CheckType.HTTP: {
      const spec = check.http!
      return `HTTP GET ${spec.scheme === "https" ? "https" : "http"}://127.0.0.1:${spec.port}${spec.path || "/"}`
    }
    default:
      return `TCP connect to 127.0.0.1:${check.tcp!.port}`
  }
}

/** The outcome of one check. */
export type Result = { readonly ok: true } | { readonly ok: false; readonly reason: string }

const passed: Result = { ok: true }
const failed = (reason: string): Result => ({ ok: false, reason })
const errorMessage = (error: unknown): string => error instanceof Error ? error.message : String(error)

const killGroup = (child: ChildProcess) => {
  if (child.pid === undefined) return
  try {
    process.kill(-child.pid, "SIGKILL")
  } catch {
    // Already gone.
  }
}

/**
 * Runs the check's command in the sandbox, in a process group of its own so that a timeout (an
 * interruption) kills everything it started. Exit status 0 passes; otherwise the failure carries
 * the status and the end of the command's output.
 */
const commandProbe = (command: v1.CommandInfo, sandbox: string, env: Record<string, string>, user: User | string | undefined) =>
  Effect.callback<Result>((resume) => {
    // The task's user can no longer be had (it was removed while the task ran): the check fails
    // rather than run with the agent's rights.
    if (typeof user === "string") return resume(Effect.succeed(failed(`cannot run the command as the task's user: ${user}`)))
    let child: ChildProcess
    try {
      const [file, args] = command.shell
        ? ["/bin/sh", ["-c", command.value]]
        : [command.value, command.arguments.slice(1)]
      // A task run as another user has its checks run as that user too: the command sees what the
      // task sees, and gets no more rights than the task has.
      const target = user === undefined ? undefined : spawnAsUser(user, file, args, env)
      const argv0 = command.shell || target !== undefined ? undefined : command.arguments[0]
      child = spawn(target?.file ?? file, target?.args ?? args, {
        cwd: sandbox,
        env: target?.env ?? env,
        detached: true,
        stdio: ["ignore", "pipe", "pipe"],
        ...(target?.ids ?? {}),
        ...(argv0 !== undefined && argv0 !== "" ? { argv0 } : {})
      })
    } catch (error) {
      resume(Effect.succeed(failed(`cannot run the command: ${errorMessage(error)}`)))
      return
    }
    let output = ""
    const collect = (chunk: Buffer) => {
      output = (output + chunk.toString("utf8")).slice(-400)
    }
    child.stdout?.on("data", collect)
    child.stderr?.on("data", collect)
    child.on("error", (error) => resume(Effect.succeed(failed(`cannot run the command: ${error.message}`))))
    child.on("exit", (code, signal) => {
      // Whatever the check left running in its group goes with it.
      killGroup(child)
      const tail = output.trim().split("\n").slice(-3).join(" | ")
      resume(Effect.succeed(
        code === 0 ? passed : failed(describeTermination({ code, signal }) + (tail === "" ? "" : ` (output: ${tail})`))
      ))
    })
    return Effect.sync(() => killGroup(child))
  })

const httpProbe = (spec: v1.HealthCheck_Http) =>
  Effect.callback<Result>((resume) => {
    const options = {
      host: "127.0.0.1",
      port: spec.port,
      path: spec.path || "/",
      method: "GET",
      agent: false as const,
      headers: { "user-agent": "berth-health-check" }
    }
    const onResponse = (response: http.IncomingMessage) => {
      const status = response.statusCode ?? 0
      const ok = spec.statuses.length > 0 ? spec.statuses.includes(status) : status >= 200 && status <= 399
      resume(Effect.succeed(ok ? passed : failed(`HTTP status ${status}`)))
      // The status is the answer; an endless body must not hold the connection open.
      response.destroy()
    }
    // As Mesos' HTTPS checks, the certificate is not verified: the check asks "is it up", not "is it who it says".
    const request = spec.scheme === "https"
      ? https.request({ ...options, rejectUnauthorized: false }, onResponse)
      : http.request(options, onResponse)
    request.on("error", (error) => resume(Effect.succeed(failed(error.message))))
    request.end()
    return Effect.sync(() => void request.destroy())
  })

const tcpProbe = (port: number) =>
  Effect.callback<Result>((resume) => {
    const socket = net.connect({ host: "127.0.0.1", port })
    socket.once("connect", () => {
      socket.destroy()
      resume(Effect.succeed(passed))
    })
    socket.once("error", (error) => {
      socket.destroy()
      resume(Effect.succeed(failed(error.message)))
    })
    return Effect.sync(() => void socket.destroy())
  })

/** One check of `check` (already validated), failing as a result (never as an error) after its timeout. */
export const probe = (
  check: v1.HealthCheck,
  context: {
    readonly sandbox: string
    readonly env: Record<string, string>
    /** The task's user, for COMMAND checks (undefined: the agent's own; a string: why it cannot be had). */
    readonly user?: User | string | undefined
  }
): Effect.Effect<Result> => {
  const timeout = timings(check).timeout
  const once = check.type === CheckType.COMMAND
    ? commandProbe(check.command!, context.sandbox, {
      ...context.env,
      ...Object.fromEntries(check.command!.environment.map((variable) => [variable.name, variable.value]))
    }, context.user)
    : check.type === CheckType.HTTP
    ? httpProbe(check.http!)
    : tcpProbe(check.tcp!.port)
  return once.pipe(
    Effect.timeoutOrElse({
      duration: timeout,
      orElse: () => Effect.succeed(failed(`timed out after ${Duration.format(timeout)}`))
    })
  )
}

/** What a checker tells the executor; the executor turns these into status updates. */
export type CheckEvent =
  | { readonly _tag: "Health"; readonly healthy: boolean; readonly message: string }
  | { readonly _tag: "HealthKill"; readonly message: string }
  | { readonly _tag: "Ready"; readonly ready: boolean; readonly message: string }

/**
 * A health checker, as Mesos runs it: waits `delay`, then checks every `interval` (timing out after
 * `timeout`). The first result and every change of health is emitted. Failures within `grace`
 * of the start are ignored until the task has passed once. After `consecutiveFailures` failures
 * in a row it emits `HealthKill` and stops. Time comes from the Effect clock only.
 */
export const runHealth = (
  check: v1.HealthCheck,
  once: Effect.Effect<Result>,
  emit: (event: CheckEvent) => Effect.Effect<void>
): Effect.Effect<void> =>
  Effect.gen(function*() {
    const { consecutiveFailures, delay, grace, interval } = timings(check)
    const what = describeCheck(check)
    const startedAt = yield* Clock.currentTimeMillis
    let healthy: boolean | undefined
    let passedOnce = false
    let failures = 0
    yield* Effect.sleep(delay)
    while (true) {
      const result = yield* once
      if (result.ok) {
        failures = 0
        passedOnce = true
        if (healthy !== true) {
          healthy = true
          yield* emit({ _tag: "Health", healthy: true, message: `Health check passed (${what})` })
        }
      } else if (!passedOnce && (yield* Clock.currentTimeMillis) - startedAt < Duration.toMillis(grace)) {
        yield* Effect.logDebug(`health check failed within the grace period, ignored: ${result.reason}`)
      } else {
        failures += 1
        if (healthy !== false) {
          healthy = false
          yield* emit({ _tag: "Health", healthy: false, message: `Health check failed (${what}): ${result.reason}` })
        }
        if (failures >= consecutiveFailures) {
          yield* emit({
            _tag: "HealthKill",
            message: `Task killed after ${failures} consecutive failed health checks (${what}); ` +
              `last failure: ${result.reason}`
          })
          return
        }
      }
      yield* Effect.sleep(interval)
    }
  })

/**
 * A readiness checker (Mesos' generalized check): same delay, interval and timeout, the first result
 * and every change emitted, no grace period, and it never asks for a kill.
 */
export const runReadiness = (
  check: v1.HealthCheck,
  once: Effect.Effect<Result>,
  emit: (event: CheckEvent) => Effect.Effect<void>
): Effect.Effect<never> =>
  Effect.gen(function*() {
    const { delay, interval } = timings(check)
    const what = describeCheck(check)
    let ready: boolean | undefined
    yield* Effect.sleep(delay)
    while (true) {
      const result = yield* once
      if (result.ok !== ready) {
        ready = result.ok
        yield* emit({
          _tag: "Ready",
          ready: result.ok,
          message: result.ok ? `Readiness check passed (${what})` : `Readiness check failed (${what}): ${result.reason}`
        })
      }
      yield* Effect.sleep(interval)
    }
  })
