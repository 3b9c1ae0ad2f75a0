/**
 * One `berth` daemon (master or agent) as a child process: started from the installed
 * `@berth/cluster-core` package's `berth` binary on the current Node, its stdout and stderr
 * appended to a log file of its own, signalled by pid.
 */
import { Effect } from "effect"
import { type ChildProcess, spawn } from "node:child_process"
import * as fs from "node:fs"
import { createRequire } from "node:module"
import * as path from "node:path"
import { ProcessError, TimeoutError } from "../TestClusterError.ts"

/** `dist/bin/berth.js` of the installed `@berth/cluster-core`, from its package.json `bin`. */
export const berthBinary = (() => {
  let cached: string | undefined
  return () => {
    if (cached !== undefined) return cached
    const manifest = createRequire(import.meta.url).resolve("@berth/cluster-core/package.json")
    const bin = (JSON.parse(fs.readFileSync(manifest, "utf8")) as { bin?: Record<string, string> }).bin?.berth ?? "dist/bin/berth.js"
    cached = path.join(path.dirname(manifest), bin)
    return cached
  }
})()

export const tail = (file: string, lines = 20): string => {
  try {
    return fs.readFileSync(file, "utf8").trimEnd().split("\n").slice(-lines).join("\n")
  } catch {
    return ""
  }
}

export interface Daemon {
  readonly name: string
  readonly logFile: string
  readonly pid: () => number | undefined
  readonly running: () => boolean
  /** Spawns the process and waits until its output matches `ready` (the match is returned). */
  readonly start: Effect.Effect<RegExpExecArray, ProcessError | TimeoutError>
  readonly signal: (signal: NodeJS.Signals) => boolean
  /** Waits (up to 2 s) until the process is stopped (after SIGSTOP) or running (after SIGCONT). */
  readonly settle: (stopped: boolean) => Effect.Effect<void>
  /** SIGKILL, then waits until the process is gone. Quiet: no exit line in the log. */
  readonly kill: (options?: { readonly quiet?: boolean }) => Effect.Effect<void>
}

export interface DaemonOptions {
  readonly name: string
  readonly logFile: string
  readonly cwd: string
  /** The arguments after the binary, computed at every start (a restart may reuse a port). */
  readonly args: () => ReadonlyArray<string>
  readonly ready: RegExp
  readonly readyTimeoutMs: number
  /** Called when the process exits without the testkit having killed it. */
  readonly onUnexpectedExit: (description: string) => void
}

const exited = (child: ChildProcess) =>
  Effect.callback<void>((resume) => {
    if (child.exitCode !== null || child.signalCode !== null) return resume(Effect.void)
    child.once("exit", () => resume(Effect.void))
  })

export const make = (options: DaemonOptions): Daemon => {
  let child: ChildProcess | undefined
  let expected = false
  let quiet = false
  const log = (text: string) => {
    try {
      fs.appendFileSync(options.logFile, text)
    } catch {
      // The cluster's directory is being removed.
    }
  }
  const running = () => child !== undefined && child.exitCode === null && child.signalCode === null
  const start = Effect.callback<RegExpExecArray, ProcessError | TimeoutError>((resume) => {
    const args = [berthBinary(), ...options.args()]
    log(`--- testkit ${new Date().toISOString()}: starting ${options.name}: node ${args.join(" ")}\n`)
    const spawned = spawn(process.execPath, args, { cwd: options.cwd, stdio: ["ignore", "pipe", "pipe"], env: process.env })
    child = spawned
    expected = false
    quiet = false
    let output = ""
    let done = false
    const finish = (effect: Effect.Effect<RegExpExecArray, ProcessError | TimeoutError>) => {
      if (done) return
      done = true
      clearTimeout(timer)
      resume(effect)
    }
    const onData = (chunk: Buffer) => {
      log(chunk.toString("utf8"))
      if (done) return
      output += chunk.toString("utf8")
      const match = options.ready.exec(output)
      if (match !== null) finish(Effect.succeed(match))
    }
    spawned.stdout!.on("data", onData)
    spawned.stderr!.on("data", onData)
    spawned.once("error", (error) =>
      finish(Effect.fail(new ProcessError({ process: options.name, reason: `cannot start: ${error.message}`, log: tail(options.logFile) }))))
    spawned.once("exit", (code, signal) => {
      const how = signal === null ? `exit status ${code}` : signal
      if (!quiet) log(`--- testkit ${new Date().toISOString()}: ${options.name} (pid ${spawned.pid}) ended: ${how}\n`)
      if (!expected && done) options.onUnexpectedExit(`${options.name} exited unexpectedly (${how})`)
      finish(Effect.fail(new ProcessError({ process: options.name, reason: `ended (${how}) before it was ready`, log: tail(options.logFile) })))
    })
    const timer = setTimeout(
      () => finish(Effect.fail(new TimeoutError({ description: `${options.name} to start`, timeoutMs: options.readyTimeoutMs }))),
      options.readyTimeoutMs
    )
    return Effect.sync(() => clearTimeout(timer))
  })
  const signal = (sig: NodeJS.Signals) => {
    if (!running() || child?.pid === undefined) return false
    try {
      process.kill(child.pid, sig)
      return true
    } catch {
      return false
    }
  }
  /** Waits (up to 2 s) until the kernel shows the process stopped, or running again. */
  const settle = (stopped: boolean) =>
    Effect.gen(function*() {
      const pid = child?.pid
      for (let i = 0; i < 200 && pid !== undefined && running(); i++) {
        let state = ""
        try {
          const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8")
          state = stat.slice(stat.lastIndexOf(")") + 2)[0] ?? ""
        } catch {
          return
        }
        if ((state === "T" || state === "t") === stopped) return
        yield* Effect.sleep("10 millis")
      }
    })
  const kill = (killOptions?: { readonly quiet?: boolean }) =>
    Effect.suspend(() => {
      const target = child
      if (target === undefined || !running()) return Effect.void
      expected = true
      quiet = killOptions?.quiet ?? false
      signal("SIGKILL")
      return exited(target).pipe(Effect.timeoutOrElse({ duration: "10 seconds", orElse: () => Effect.void }))
    })
  return {
    name: options.name,
    logFile: options.logFile,
    pid: () => (running() ? child?.pid : undefined),
    running,
    start,
    signal,
    settle,
    kill
  }
}
