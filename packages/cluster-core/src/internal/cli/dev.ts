import { Deferred, Effect, Scope } from "effect"
import { spawn, type ChildProcess } from "node:child_process"
import * as path from "node:path"
import { StartupError } from "../../ClusterError.ts"

export interface DevOptions {
  readonly dir: string
  readonly host: string
  readonly port: number
  readonly agents: number
  readonly agentResources: string
  /** `--log-level` for the children ("" leaves them to BERTH_LOG_LEVEL or info). */
  readonly logLevel?: string
  /** The `berth` entry point to run children with (this very script). */
  readonly entry: string
}

const prefixLines = (name: string, source: NodeJS.ReadableStream, sink: (line: string) => void) => {
  let buffered = ""
  source.on("data", (chunk: Buffer) => {
    buffered += chunk.toString("utf8")
    let newline = buffered.indexOf("\n")
    while (newline >= 0) {
      sink(`[${name}] ${buffered.slice(0, newline)}`)
      buffered = buffered.slice(newline + 1)
      newline = buffered.indexOf("\n")
    }
  })
}

/**
 * A child daemon bound to the scope: on release it gets SIGTERM (agents run with
 * --kill-tasks-on-stop, so they shut their tasks down, each within at most 10 s, and exit), and
 * SIGKILL if it has not exited after 15 seconds.
 */
const daemon = (name: string, entry: string, args: ReadonlyArray<string>, onLine: (line: string) => void) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      // BERTH_PARENT_PID: the child notices this process's death even if it comes before the
      // child's own start-up has read its parent (--exit-with-parent).
      const child = spawn(process.execPath, [entry, ...args], {
        stdio: ["ignore", "pipe", "pipe"],
        env: { ...process.env, BERTH_PARENT_PID: String(process.pid) }
      })
      prefixLines(name, child.stdout!, onLine)
      prefixLines(name, child.stderr!, (line) => process.stderr.write(line + "\n"))
      return child
    }),
    (child: ChildProcess) =>
      Effect.callback<void>((resume) => {
        if (child.exitCode !== null || child.signalCode !== null) return resume(Effect.void)
        const timer = setTimeout(() => child.kill("SIGKILL"), 15_000)
        child.once("exit", () => {
          clearTimeout(timer)
          resume(Effect.void)
        })
        child.kill("SIGTERM")
      })
  )

/**
 * `berth dev`: one master (SQLite state under `dir`) and N agents, each a child process, kept
 * until interrupted (Ctrl-C), then stopped together.
 */
export const run = (options: DevOptions) =>
  Effect.gen(function*() {
    // Children stop by themselves should `berth dev` be SIGKILLed (no chance to run its finalizers).
    const common = ["--exit-with-parent", ...(options.logLevel === undefined || options.logLevel === "" ? [] : ["--log-level", options.logLevel])]
    const scope = yield* Scope.Scope
    const endpoint = yield* Deferred.make<string, StartupError>()
    const masterLine = (line: string) => {
      process.stdout.write(line + "\n")
      const match = /master listening on (\S+)/.exec(line)
      if (match !== null) Deferred.doneUnsafe(endpoint, Effect.succeed(match[1]!))
    }
    const master = yield* daemon(
      "master",
      options.entry,
      [
        "master",
        "--host",
        options.host,
        "--port",
        String(options.port),
        "--http-port",
        String(options.port === 0 ? 0 : options.port + 1),
        "--state",
        `sqlite:${path.join(options.dir, "master.db")}`,
        ...common
      ],
      masterLine
    ).pipe(Scope.provide(scope))
    master.once("exit", (code) =>
      Deferred.doneUnsafe(endpoint, Effect.fail(new StartupError({ component: "dev", reason: `the master exited with code ${code}` })))
    )
    const masterEndpoint = yield* Deferred.await(endpoint).pipe(
      Effect.timeoutOrElse({
        duration: "20 seconds",
        orElse: () => Effect.fail(new StartupError({ component: "dev", reason: "the master did not start within 20 s" }))
      })
    )
    for (let i = 1; i <= options.agents; i++) {
      yield* daemon(
        `agent-${i}`,
        options.entry,
        [
          "agent",
          "--master",
          masterEndpoint,
          "--work-dir",
          path.join(options.dir, `agent-${i}`),
          "--resources",
          options.agentResources,
          "--attributes",
          `rack:r${((i - 1) % 3) + 1}`,
          // A local cluster leaves nothing behind on Ctrl-C (a real agent leaves its tasks running).
          "--kill-tasks-on-stop",
          "--hostname",
          `agent-${i}.local`,
          ...common
        ],
        (line) => process.stdout.write(line + "\n")
      ).pipe(Scope.provide(scope))
    }
    process.stdout.write(`berth dev: cluster ready: master ${masterEndpoint}, ${options.agents} agents, state in ${options.dir}\n`)
    return yield* Effect.never
  })
