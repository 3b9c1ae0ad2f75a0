/**
 * The main program of a master or agent container of the containers backend (run by Node inside
 * the container, under Docker's init so orphaned task processes are reaped). It keeps the
 * container up while the `berth` daemon in it is killed and started again, like a machine whose
 * daemon crashes: the daemon's tasks and its work dir outlive it.
 *
 * - It runs the daemon (`command`) with its output on the container's stdout, and writes one line
 *   `[supervisor] <name> started (pid N)` / `[supervisor] <name> ended (how)` around each run.
 * - SIGUSR1 SIGKILLs the daemon (the testkit's "kill"); SIGUSR2 starts it again if it is not
 *   running ("restart"). SIGTERM kills it and ends the container.
 * - `forwards`: a TCP forwarder on 127.0.0.1:<port> to <host>:<port> each. Masters advertise
 *   "127.0.0.1:<port>" (the port is published on the Docker host under the same number), so
 *   that address means the same master to the test process and, through these forwarders, to
 *   an agent in its container: a standby's "the leader is 127.0.0.1:<port>" is followed alike.
 *
 * A forwarded connection whose peer stays silent for `deadAfterMs` after data was sent to it is
 * closed on both sides. This stands in for TCP's retransmission timeout (minutes) once the Docker
 * network is cut: the agent pings the master every few seconds and the master answers at once, so
 * a healthy link is never silent that long.
 *
 * Standalone on purpose: only `node:` modules, so nothing but Node is needed in the container.
 */
import { type ChildProcess, spawn } from "node:child_process"
import * as net from "node:net"

export interface SupervisorConfig {
  /** "master-1", "agent-2": the name in the supervisor's lines. */
  readonly name: string
  /** The daemon's argv, the first element being the program. */
  readonly command: ReadonlyArray<string>
  readonly forwards: ReadonlyArray<{ readonly port: number; readonly host: string }>
  readonly deadAfterMs: number
}

const main = () => {
  const config = JSON.parse(process.argv[2] ?? "{}") as SupervisorConfig
  const say = (text: string) => process.stdout.write(`[supervisor] ${config.name} ${text}\n`)

  for (const forward of config.forwards) {
    const server = net.createServer((client) => {
      const upstream = net.connect({ host: forward.host, port: forward.port })
      let waitingSince: number | undefined
      const close = () => {
        clearInterval(timer)
        client.destroy()
        upstream.destroy()
      }
      const timer = setInterval(() => {
        if (waitingSince !== undefined && Date.now() - waitingSince > config.deadAfterMs) {
          say(`forwarder: no answer from ${forward.host}:${forward.port} for ${config.deadAfterMs} ms; closing the connection`)
          close()
        }
      }, 250)
      client.on("data", (chunk) => {
        waitingSince ??= Date.now()
        upstream.write(chunk)
      })
      upstream.on("data", (chunk) => {
        waitingSince = undefined
        client.write(chunk)
      })
      client.on("error", close).on("close", close)
      upstream.on("error", close).on("close", close)
    })
    server.on("error", (error) => say(`forwarder on 127.0.0.1:${forward.port}: ${error.message}`))
    server.listen(forward.port, "127.0.0.1")
  }

  let child: ChildProcess | undefined
  const running = () => child !== undefined && child.exitCode === null && child.signalCode === null
  const start = () => {
    if (running()) return
    const [program, ...args] = config.command
    const spawned = spawn(program!, args, { stdio: ["ignore", "inherit", "inherit"] })
    child = spawned
    spawned.on("spawn", () => say(`started (pid ${spawned.pid})`))
    spawned.on("error", (error) => say(`ended (cannot start: ${error.message})`))
    spawned.on("exit", (code, signal) => say(`ended (${signal ?? `exit status ${code}`})`))
  }
  process.on("SIGUSR1", () => {
    if (running()) child!.kill("SIGKILL")
  })
  process.on("SIGUSR2", start)
  process.on("SIGTERM", () => {
    if (running()) child!.kill("SIGKILL")
    process.exit(0)
  })
  // Signal handlers do not keep Node running: without forwarders (a master's container) the
  // supervisor would end with its daemon, and the container with it.
  setInterval(() => undefined, 1 << 30)
  start()
}

// Only when run as the container's program, not when the module is imported for its types.
if (process.argv[1] !== undefined && import.meta.url.endsWith(process.argv[1].replace(/\\/g, "/"))) main()
