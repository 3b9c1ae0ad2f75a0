import { type ChildProcess, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { Effect } from "effect"
import type { v1 } from "@berth/proto"
import { LaunchError } from "../ExecutorError.ts"

/** How a process ended: exactly one of `code` and `signal` is set. */
export interface Termination {
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
}

/** The status message Mesos users know, e.g. "Command exited with status 3". */
export const describeTermination = (termination: Termination): string =>
  termination.signal !== null
    ? `Command terminated with signal ${termination.signal}`
    : `Command exited with status ${termination.code}`

/** Why `command` cannot be run, if it cannot. */
export const commandProblem = (command: v1.CommandInfo | undefined): string | undefined => {
  if (command === undefined) return "the command executor needs a task with a command"
  if (command.value === "") {
    return command.shell ? "command.value: the shell command is empty" : "command.value: the executable is empty"
  }
  return undefined
}

const errorMessage = (error: unknown): string => error instanceof Error ? error.message : String(error)

/**
 * Sends `signal` to the process group led by `pid`. A group that is already gone (ESRCH) is what
 * we wanted; anything else is logged rather than failing, because the caller is usually cleaning up.
 */
export const signalGroup = (pid: number, signal: NodeJS.Signals): Effect.Effect<void> =>
  Effect.suspend(() => {
    try {
      process.kill(-pid, signal)
      return Effect.void
    } catch (error) {
      return (error as NodeJS.ErrnoException).code === "ESRCH"
        ? Effect.void
        : Effect.logWarning(`cannot send ${signal} to process group ${pid}: ${errorMessage(error)}`)
    }
  })

/** Whether the process has ended; Node sets these before it emits "exit". */
export const hasExited = (child: ChildProcess): boolean => child.exitCode !== null || child.signalCode !== null

/**
 * Starts `command` in `sandbox` as the leader of a new process group (so one signal reaches
 * everything it starts), with its output appended to the sandbox files `stdout` and `stderr`.
 * Succeeds once the process runs.
 */
export const start = (options: {
  readonly taskId: string
  readonly sandbox: string
  readonly command: v1.CommandInfo
  readonly env: Record<string, string>
}): Effect.Effect<ChildProcess, LaunchError> =>
  Effect.callback<ChildProcess, LaunchError>((resume) => {
    const { command, sandbox, taskId } = options
    const fail = (error: unknown) => resume(Effect.fail(new LaunchError({ taskId, message: errorMessage(error) })))
    const fds: Array<number> = []
    let child: ChildProcess
    try {
      fds.push(fs.openSync(path.join(sandbox, "stdout"), "a"), fs.openSync(path.join(sandbox, "stderr"), "a"))
      const [file, args] = command.shell
        ? ["/bin/sh", ["-c", command.value]]
        : [command.value, command.arguments.slice(1)]
      const argv0 = command.shell ? undefined : command.arguments[0]
      child = spawn(file, args, {
        cwd: sandbox,
        env: options.env,
        detached: true,
        stdio: ["ignore", fds[0]!, fds[1]!],
        ...(argv0 !== undefined && argv0 !== "" ? { argv0 } : {})
      })
    } catch (error) {
      fail(error)
      return
    } finally {
      // The child has its own copies once spawn() returns.
      for (const fd of fds) fs.closeSync(fd)
    }
    // Without an "error" listener a later error event would crash the whole agent.
    child.on("error", (error) => {
      if (child.pid === undefined) fail(error)
    })
    child.once("spawn", () => resume(Effect.succeed(child)))
    return Effect.suspend(() => child.pid === undefined ? Effect.void : signalGroup(child.pid, "SIGKILL"))
  })

/** Waits for `child` to end. */
export const awaitExit = (child: ChildProcess): Effect.Effect<Termination> =>
  Effect.callback<Termination>((resume) => {
    if (hasExited(child)) {
      resume(Effect.succeed({ code: child.exitCode, signal: child.signalCode }))
      return
    }
    const onExit = (code: number | null, signal: NodeJS.Signals | null) => resume(Effect.succeed({ code, signal }))
    child.once("exit", onExit)
    return Effect.sync(() => child.off("exit", onExit))
  })
