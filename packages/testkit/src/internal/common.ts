/** What both backends share: the failure report and its dump, and waiting for a state. */
import type { v1 } from "@berth/proto"
import { Effect, Exit, Schedule } from "effect"
import type * as Operator from "../Operator.ts"
import type { EventLog, Options, TestCluster } from "../TestCluster.ts"
import { TimeoutError } from "../TestClusterError.ts"
import { tail } from "./daemon.ts"

export interface ReportedProcess {
  readonly name: string
  readonly pid: () => number | undefined
  readonly logFile: string | undefined
}

export const report = (
  backend: string,
  workDir: string,
  events: EventLog,
  processes: () => ReadonlyArray<ReportedProcess>,
  lines = 20
): string => {
  const out = [
    `===== berth testkit: cluster report (${backend} backend, ${workDir}) =====`,
    "----- cluster event log -----",
    events.format() || "(empty)"
  ]
  for (const p of processes()) {
    if (p.logFile === undefined) continue
    const pid = p.pid()
    out.push(`----- ${p.name} (${pid === undefined ? "not running" : `pid ${pid}`}), last ${lines} lines of ${p.logFile} -----`)
    out.push(tail(p.logFile, lines) || "(empty)")
  }
  out.push("===== end of cluster report =====")
  return out.join("\n") + "\n"
}

/** Where the failure report goes: the option's function, or stderr. */
export const writeReport = (options: Options, text: string) => {
  if (options.dumpOnFailure === false) return
  if (typeof options.dumpOnFailure === "function") options.dumpOnFailure(text)
  else process.stderr.write(text)
}

/**
 * The cluster's report, and a finalizer that writes it when the scope closes with a failure. Add
 * the finalizer twice: early (so a failing start is reported) and once everything runs (so the
 * report is taken before the processes are stopped); it writes once. The report taken at close
 * stays readable afterwards (the log files are gone by then).
 */
export const reporting = (options: Options, live: () => string) => {
  let snapshot: string | undefined
  let written = false
  return {
    report: () => snapshot ?? live(),
    finalizer: Effect.addFinalizer((exit) =>
      Effect.sync(() => {
        snapshot ??= live()
        if (Exit.isFailure(exit) && !written) {
          written = true
          writeReport(options, snapshot)
        }
      })
    )
  }
}

const transient = new Set(["UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED"])

export const waitFor = (operator: Operator.Operator): TestCluster["waitFor"] => (description, condition, options) => {
  const timeoutMs = options?.timeout ?? 30_000
  let last: Operator.OperatorError | undefined
  const poll: Effect.Effect<v1.GetStateResponse | undefined, Operator.OperatorError> = operator.state.pipe(
    Effect.map((state) => (condition(state) ? state : undefined)),
    Effect.catchIf((error) => transient.has(error.code), (error) => Effect.sync(() => {
      last = error
      return undefined
    }))
  )
  return poll.pipe(
    Effect.repeat({ schedule: Schedule.spaced("50 millis"), until: (state) => state !== undefined }),
    Effect.map((state) => state!),
    Effect.timeoutOrElse({
      duration: timeoutMs,
      orElse: () =>
        Effect.fail(
          new TimeoutError({ description: last === undefined ? description : `${description} (last error: ${last.code} ${last.message})`, timeoutMs })
        )
    })
  )
}
