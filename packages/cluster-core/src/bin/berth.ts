#!/usr/bin/env node
/**
 * The `berth` command: `berth master`, `berth agent` and `berth dev`. Flags are checked before
 * anything starts; a bad one prints one line naming the flag and the rule and exits 2.
 */
// First: it reads the parent's pid before anything else loads (--exit-with-parent).
import { startingParent } from "../internal/cli/startingParent.ts"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import * as Flags from "../internal/cli/flags.ts"

const major = Number(process.versions.node.split(".")[0])
if (major < 22) {
  process.stderr.write(`berth: Node ${process.versions.node} is too old: Berth needs Node >= 22 (24 recommended)\n`)
  process.exit(1)
}

/** Flags of every long-running command (master, agent, dev, simulate). */
const daemonFlags = {
  "log-level": { kind: "log-level", description: "Least severe log entries printed: debug, info, warn, error or none (env BERTH_LOG_LEVEL; default info)", default: "" },
  "exit-with-parent": { kind: "boolean", description: "Stop (cleanly, as on SIGTERM) when the process that started this one dies", default: "" }
} satisfies Record<string, Flags.FlagSpec>

const masterFlags = {
  host: { kind: "string", description: "Address to listen on", default: "127.0.0.1" },
  port: { kind: "port", description: "gRPC port (0 picks a free one)", default: "5050" },
  state: { kind: "store", description: "Durable registry: sqlite:<path>, etcd:<host:port,...> or memory:", default: "sqlite:.berth/master.db" },
  "offer-timeout": { kind: "seconds", description: "Seconds before an unused offer is rescinded", default: "60" },
  "allocation-interval": { kind: "seconds", description: "Seconds between allocation rounds", default: "1" },
  "heartbeat-interval": { kind: "seconds", description: "Seconds between scheduler heartbeats", default: "15" },
  "agent-ping-interval": { kind: "seconds", description: "Seconds between agent pings", default: "5" },
  "agent-ping-misses": { kind: "count", description: "Missed pings before an agent is unreachable", default: "5" },
  "leader-lease": { kind: "seconds", description: "Seconds a leader's lease lasts without renewal (HA)", default: "5" },
  "http-port": { kind: "port", description: "Port for Prometheus /metrics and /health (off when not given)", default: "" },
  "tls-cert": { kind: "file", description: "PEM certificate (chain) to serve gRPC over TLS (plaintext when not given)", default: "" },
  "tls-key": { kind: "file", description: "PEM private key of --tls-cert", default: "" },
  "tls-ca": { kind: "file", description: "PEM CA bundle: mutual TLS, clients must present a certificate it signed", default: "" },
  credentials: { kind: "file", description: "JSON file of principals (framework, agent, operator) with secrets or tokens", default: "" },
  authenticate: {
    kind: "authenticate",
    description: 'Who must authenticate: frameworks,operators,agents (the default with --credentials) or "none"',
    default: ""
  },
  acls: { kind: "file", description: "JSON file: roles per framework principal, operator principals", default: "" },
  "subscribe-rate": { kind: "rate", description: 'Subscribe and Revive calls per principal, e.g. "2/s,burst=10" (off when not given)', default: "" },
  ...daemonFlags
} satisfies Record<string, Flags.FlagSpec>

const agentFlags = {
  master: { kind: "endpoints", description: "The master's host:port (several, comma-separated, for HA)" },
  "work-dir": { kind: "string", description: "Sandboxes and agent state", default: ".berth/agent" },
  resources: { kind: "resources", description: 'Declared resources, e.g. "cpus:2;mem:1024;ports:[31000-31100]"', default: "" },
  attributes: { kind: "attributes", description: 'Attributes, e.g. "rack:r1;zone:z1"', default: "" },
  hostname: { kind: "string", description: "Hostname reported to the master", default: os.hostname() },
  host: { kind: "string", description: "Address of the agent's own API (sandbox files)", default: "127.0.0.1" },
  port: { kind: "port", description: "Port of the agent's own API (0 picks a free one)", default: "0" },
  recover: { kind: "string", description: "Tasks left by a previous agent: reconnect (re-attach) or cleanup (kill them)", default: "reconnect" },
  "gc-delay": { kind: "seconds", description: "Seconds a finished task's sandbox is kept once its last update is acknowledged", default: "604800" },
  "status-update-retry-min": { kind: "seconds", description: "Seconds before an unacknowledged status update is resent (doubling)", default: "10" },
  "status-update-retry-max": { kind: "seconds", description: "Most seconds between resends of an unacknowledged status update", default: "600" },
  "kill-tasks-on-stop": { kind: "boolean", description: "Kill the tasks when the agent stops (else they keep running for the next agent)", default: "" },
  "executor-registration-timeout": { kind: "seconds", description: "Seconds a custom executor has to subscribe before it is killed", default: "60" },
  "executor-reregistration-timeout": { kind: "seconds", description: "Seconds a custom executor has to subscribe again after an agent restart", default: "10" },
  "recovery-timeout": { kind: "seconds", description: "Seconds custom executors keep trying to reach an agent that is away", default: "900" },
  cgroups: { kind: "string", description: "auto: cpu and memory limits through cgroups where the machine allows; off: none", default: "auto" },
  "api-tls-cert": { kind: "string", description: "PEM certificate the agent's own API serves TLS with", default: "" },
  "api-tls-key": { kind: "string", description: "PEM key of --api-tls-cert", default: "" },
  "api-tls-ca": { kind: "string", description: "PEM CA that signed --api-tls-cert (given to custom executors)", default: "" },
  "api-credentials": { kind: "file", description: "JSON credentials file: operator principals that may read sandbox files", default: "" },
  "tls-ca": { kind: "string", description: "PEM file of the CA that signed the master's certificate (TLS to the master)", default: "" },
  "tls-cert": { kind: "string", description: "PEM client certificate, when the master requires mutual TLS", default: "" },
  "tls-key": { kind: "string", description: "PEM key of --tls-cert", default: "" },
  principal: { kind: "string", description: "Agent principal, when the master authenticates agents (with --secret-file)", default: "" },
  "secret-file": { kind: "string", description: "File holding the principal's secret (kept off the command line)", default: "" },
  "token-file": { kind: "string", description: "File holding a bearer token (instead of --principal and --secret-file)", default: "" },
  ...daemonFlags
} satisfies Record<string, Flags.FlagSpec>

const devFlags = {
  dir: { kind: "string", description: "State and sandboxes of the whole cluster", default: ".berth" },
  host: { kind: "string", description: "Address the master listens on", default: "127.0.0.1" },
  port: { kind: "port", description: "The master's gRPC port (0 picks a free one)", default: "5050" },
  agents: { kind: "count", description: "Number of agents", default: "3" },
  "agent-resources": { kind: "resources", description: "Resources of each agent", default: "cpus:2;mem:2048;disk:4096;ports:[31000-31999]" },
  ...daemonFlags
} satisfies Record<string, Flags.FlagSpec>

const stateFlags = {
  store: { kind: "string", description: "The store: sqlite:<path>, etcd:<host:port>[,...][?prefix=...] or memory:", default: "sqlite:.berth/master.db" },
  prefix: { kind: "string", description: "Only keys starting with this prefix", default: "" },
  get: { kind: "string", description: "Print this one key with its value", default: "" },
  dump: { kind: "boolean", description: "Print values too, not only keys", default: "" }
} satisfies Record<string, Flags.FlagSpec>

const simulateFlags = {
  masters: { kind: "string", description: "Masters to try, comma-separated host:port (a standby leads agents to the leader)" },
  agents: { kind: "string", description: "Number of simulated agents (1..100000)", default: "100" },
  resources: { kind: "resources", description: "Resources of every simulated agent", default: "cpus:32;mem:65536;disk:65536;ports:[31000-32000]" },
  "task-seconds": { kind: "seconds", description: "Tasks finish after this long (default: they run until killed)", default: "" },
  "hostname-prefix": { kind: "string", description: "Agents are named <prefix>-<i>", default: "sim" },
  ...daemonFlags
} satisfies Record<string, Flags.FlagSpec>

const commands = {
  master: { summary: "Run a master: admits agents, offers their resources to frameworks.", flags: masterFlags },
  agent: { summary: "Run an agent: offers this machine's resources and runs tasks.", flags: agentFlags },
  simulate: {
    summary: "Run many simulated agents (real protocol, no task processes) to scale-test a master or a framework.",
    flags: simulateFlags
  },
  dev: { summary: "Run a local cluster: one master and N agents as child processes.", flags: devFlags },
  state: { summary: "Print the keys (and values) of a state store as JSON.", flags: stateFlags }
} as const

const topUsage = [
  "Usage: berth <command> [flags]",
  "",
  "Commands:",
  ...Object.entries(commands).map(([name, c]) => `  ${name.padEnd(8)} ${c.summary}`),
  "",
  "Run `berth <command> --help` for its flags."
].join("\n")

const [command, ...argv] = process.argv.slice(2)
if (command === undefined || command === "--help" || command === "-h" || command === "help") {
  process.stdout.write(topUsage + "\n")
  process.exit(command === undefined ? 2 : 0)
}
if (command === "--version") {
  process.stdout.write("berth 0.1.0\n")
  process.exit(0)
}
if (!(command in commands)) {
  process.stderr.write(`berth: unknown command "${command}" (expected one of: ${Object.keys(commands).join(", ")})\n`)
  process.exit(2)
}
const spec = commands[command as keyof typeof commands]
let flags: Record<string, string> & { help: boolean }
let logLevel: (typeof Flags.LOG_LEVELS)[keyof typeof Flags.LOG_LEVELS] = "Info"
try {
  flags = Flags.parse(spec.flags as Record<string, Flags.FlagSpec>, argv) as never
  if ("log-level" in spec.flags && !flags.help) logLevel = Flags.logLevel(flags["log-level"]!, process.env.BERTH_LOG_LEVEL)
} catch (error) {
  process.stderr.write(`berth ${command}: ${(error as Error).message}\n`)
  process.exit(2)
}
if (flags.help) {
  process.stdout.write(Flags.usage(command, spec.summary, spec.flags) + "\n")
  process.exit(0)
}

// The master's recommended V8 setting (docs/performance.md, "Master at scale"): a small young
// generation. V8 otherwise grows it to 64 MB per semi-space when the old space may be large (a
// master started with --max-old-space-size), some 130 MB of RSS that holds nothing live: the
// master's garbage is short-lived messages. The flag only takes effect at start-up, so the master
// re-executes itself in place (same pid) with it, unless the flag is already given or
// BERTH_MASTER_V8_FLAGS is set ("" keeps V8's defaults).
if (command === "master" && typeof process.execve === "function") {
  const given = [...process.execArgv, process.env.NODE_OPTIONS ?? ""].some((a) => a.includes("semi-space-size"))
  const wanted = (process.env.BERTH_MASTER_V8_FLAGS ?? "--max-semi-space-size=16").split(" ").filter((a) => a !== "")
  if (!given && wanted.length > 0) {
    process.execve(process.execPath, [process.execPath, ...process.execArgv, ...wanted, ...process.argv.slice(1)], {
      ...process.env,
      BERTH_MASTER_V8_FLAGS: ""
    })
  }
}

/** The master's security settings from its flags, every file read and checked: a bad one exits 2. */
const masterSecurity = async () => {
  const fail = (flag: string, rule: string): never => {
    process.stderr.write(`berth master: --${flag}: ${rule}\n`)
    process.exit(2)
  }
  if ((flags["tls-cert"] === "") !== (flags["tls-key"] === "")) {
    fail(flags["tls-cert"] === "" ? "tls-cert" : "tls-key", `is required with --${flags["tls-cert"] === "" ? "tls-key" : "tls-cert"}`)
  }
  if (flags["tls-ca"] !== "" && flags["tls-cert"] === "") fail("tls-ca", "needs --tls-cert and --tls-key (mutual TLS is TLS plus client certificates)")
  if (flags.authenticate !== "" && flags.authenticate !== "none" && flags.credentials === "") fail("authenticate", "needs --credentials")
  const Security = await import("../internal/security.ts")
  const kinds = new Set((flags.authenticate ?? "").split(",").map((k) => k.trim()))
  const config = {
    ...(flags["tls-cert"] === ""
      ? {}
      : { tls: { certFile: flags["tls-cert"]!, keyFile: flags["tls-key"]!, ...(flags["tls-ca"] === "" ? {} : { caFile: flags["tls-ca"]! }) } }),
    ...(flags.credentials === "" ? {} : { credentials: flags.credentials! }),
    ...(flags.acls === "" ? {} : { acls: flags.acls! }),
    ...(flags.authenticate === ""
      ? {}
      : { authentication: { frameworks: kinds.has("frameworks"), operators: kinds.has("operators"), agents: kinds.has("agents") } }),
    ...(flags["subscribe-rate"] === "" ? {} : {
      subscribeRate: (() => {
        const rate = Security.parseRate(flags["subscribe-rate"]!)
        return rate._tag === "Success" ? rate.success : fail("subscribe-rate", rate.failure)
      })()
    })
  }
  const loaded = Security.load(config, Date.now())
  if (loaded._tag === "Failure") {
    const problem = loaded.failure
    const flag = problem.startsWith("tls.certFile")
      ? "tls-cert"
      : problem.startsWith("tls.keyFile")
      ? "tls-key"
      : problem.startsWith("tls.caFile")
      ? "tls-ca"
      : problem.startsWith("ACL file")
      ? "acls"
      : problem.startsWith("authentication.")
      ? "authenticate"
      : problem.startsWith("subscribeRate")
      ? "subscribe-rate"
      : "credentials"
    fail(flag, problem.replace(/^(credentials file|ACL file|tls\.\w+) |^authentication\.\w+: /, ""))
  }
  return config
}

// The daemons' modules (Effect, gRPC, storage) load only once the flags are known to be good, so
// a mistyped flag is answered at once.
const security = command === "master" ? await masterSecurity() : {}
const { NodeRuntime } = await import("@effect/platform-node")
const { StateStore } = await import("@berth/storage")
const { Cause, Effect, Exit, Layer, Logger } = await import("effect")
const Agent = await import("../Agent.ts")
const Master = await import("../Master.ts")
const Simulator = await import("../Simulator.ts")
const Dev = await import("../internal/cli/dev.ts")
const Parent = await import("../internal/cli/parent.ts")
const { References } = await import("effect")
const State = await import("../internal/cli/state.ts")

/** TLS and credentials of `berth agent`, read and checked before anything starts. */
const agentSecurity = () => {
  const refuse = (flag: string, rule: string): never => {
    process.stderr.write(`berth agent: --${flag}: ${rule}\n`)
    process.exit(2)
  }
  const read = (flag: string) => {
    try {
      return fs.readFileSync(flags[flag]!, "utf8").trim()
    } catch (error) {
      return refuse(flag, `cannot read ${flags[flag]}: ${(error as Error).message}`)
    }
  }
  if ((flags["tls-cert"] === "") !== (flags["tls-key"] === "")) refuse(flags["tls-cert"] === "" ? "tls-cert" : "tls-key", "--tls-cert and --tls-key go together")
  if (flags.principal !== "" && flags["secret-file"] === "") refuse("secret-file", "is required with --principal")
  if (flags.principal !== "" && flags["token-file"] !== "") refuse("token-file", "give either --principal with --secret-file, or --token-file")
  const tls = flags["tls-ca"] === "" && flags["tls-cert"] === ""
    ? undefined
    : {
      ...(flags["tls-ca"] === "" ? {} : { ca: flags["tls-ca"]! }),
      ...(flags["tls-cert"] === "" ? {} : { cert: flags["tls-cert"]!, key: flags["tls-key"]! })
    }
  const credentials = flags["token-file"] !== ""
    ? { token: read("token-file") }
    : flags.principal !== ""
    ? { principal: flags.principal!, secret: read("secret-file") }
    : undefined
  return { ...(tls === undefined ? {} : { tls }), ...(credentials === undefined ? {} : { credentials }) }
}

const program = (() => {
  switch (command) {
    case "master":
      return Effect.gen(function*() {
        const master = yield* Master.start({
          host: flags.host!,
          port: Number(flags.port),
          offerTimeoutSeconds: Number(flags["offer-timeout"]),
          allocationIntervalMs: Number(flags["allocation-interval"]) * 1000,
          frameworkHeartbeatSeconds: Number(flags["heartbeat-interval"]),
          agentPingSeconds: Number(flags["agent-ping-interval"]),
          agentPingMisses: Number(flags["agent-ping-misses"]),
          leaderLeaseSeconds: Number(flags["leader-lease"]),
          ...(flags["http-port"] === "" ? {} : { httpPort: Number(flags["http-port"]) }),
          ...security
        })
        process.stdout.write(`berth master listening on ${master.endpoint}\n`)
        if (master.httpEndpoint !== undefined) process.stdout.write(`berth master metrics on http://${master.httpEndpoint}/metrics\n`)
        return yield* Effect.never
      }).pipe(Effect.provide(Layer.fresh(StateStore.layerFromUrl(flags.state!))))
    case "simulate":
      return Effect.gen(function*() {
        const agents = Number(flags.agents)
        const masters = flags.masters!.split(",").map((m) => m.trim()).filter((m) => m !== "")
        if (!Number.isInteger(agents) || agents < 1 || agents > 100_000) {
          process.stderr.write(`berth simulate: --agents: must be an integer in 1..100000 (got "${flags.agents}")\n`)
          process.exit(2)
        }
        const simulator = yield* Simulator.start({
          masters,
          agents,
          resources: flags.resources!,
          hostnamePrefix: flags["hostname-prefix"]!,
          ...(flags["task-seconds"] === "" ? {} : { taskSeconds: Number(flags["task-seconds"]) })
        })
        yield* simulator.registered
        process.stdout.write(`berth simulate: ${agents} agents registered with ${masters.join(",")}\n`)
        return yield* Effect.never
      })
    case "agent":
      return Effect.gen(function*() {
        const refuse = (flag: string, rule: string): never => {
          process.stderr.write(`berth agent: --${flag}: ${rule} (got "${flags[flag]}")\n`)
          process.exit(2)
        }
        if (flags.recover !== "reconnect" && flags.recover !== "cleanup") refuse("recover", 'must be "reconnect" or "cleanup"')
        if (flags.cgroups !== "auto" && flags.cgroups !== "off") refuse("cgroups", 'must be "auto" or "off"')
        if ((flags["api-tls-cert"] === "") !== (flags["api-tls-key"] === "")) {
          refuse(flags["api-tls-cert"] === "" ? "api-tls-cert" : "api-tls-key", "--api-tls-cert and --api-tls-key go together")
        }
        if (!(Number(flags["status-update-retry-min"]) > 0)) refuse("status-update-retry-min", "must be a number of seconds > 0")
        if (Number(flags["status-update-retry-max"]) < Number(flags["status-update-retry-min"])) {
          refuse("status-update-retry-max", "must be >= --status-update-retry-min")
        }
        const agent = yield* Agent.start({
          master: flags.master!,
          workDir: flags["work-dir"]!,
          hostname: flags.hostname!,
          resources: flags.resources!,
          attributes: flags.attributes!,
          host: flags.host!,
          port: Number(flags.port),
          recover: flags.recover as "reconnect" | "cleanup",
          gcDelaySeconds: Number(flags["gc-delay"]),
          statusUpdateRetrySeconds: Number(flags["status-update-retry-min"]),
          statusUpdateRetryMaxSeconds: Number(flags["status-update-retry-max"]),
          killTasksOnStop: flags["kill-tasks-on-stop"] === "true",
          executorRegistrationTimeoutSeconds: Number(flags["executor-registration-timeout"]),
          executorReregistrationTimeoutSeconds: Number(flags["executor-reregistration-timeout"]),
          recoveryTimeoutSeconds: Number(flags["recovery-timeout"]),
          cgroups: flags.cgroups as "auto" | "off",
          ...(flags["api-tls-cert"] === ""
            ? {}
            : {
              apiTls: {
                certFile: flags["api-tls-cert"]!,
                keyFile: flags["api-tls-key"]!,
                ...(flags["api-tls-ca"] === "" ? {} : { caFile: flags["api-tls-ca"]! })
              }
            }),
          ...(flags["api-credentials"] === "" ? {} : { apiCredentials: flags["api-credentials"]! }),
          ...agentSecurity()
        })
        const agentId = yield* agent.registered
        process.stdout.write(`berth agent ${agentId} registered with ${flags.master}\n`)
        return yield* Effect.never
      })
    case "state":
      return State.run({ store: flags.store!, prefix: flags.prefix!, get: flags.get!, dump: flags.dump === "true" })
    default:
      return Dev.run({
        dir: path.resolve(flags.dir!),
        host: flags.host!,
        port: Number(flags.port),
        agents: Number(flags.agents),
        agentResources: flags["agent-resources"]!,
        logLevel: flags["log-level"] !== "" ? flags["log-level"]! : process.env.BERTH_LOG_LEVEL ?? "",
        entry: fileURLToPath(import.meta.url)
      })
  }
})()

// --exit-with-parent: whichever ends first wins; a dead parent interrupts the program, whose scope
// then closes as on SIGTERM (the agent stops what it started) before the process exits 0.
// The parent usually held the other end of stdout and stderr: once it is gone a write fails with
// EPIPE, which must not crash the process before it has stopped its tasks.
if (flags["exit-with-parent"] === "true") {
  for (const stream of [process.stdout, process.stderr]) stream.on("error", () => {})
}
const supervised = flags["exit-with-parent"] === "true"
  ? Effect.raceFirst(
    program as import("effect").Effect.Effect<unknown, unknown, import("effect").Scope.Scope>,
    Parent.parentDied(startingParent).pipe(
      Effect.flatMap((parent) => Effect.logInfo("parent process exited; stopping").pipe(Effect.annotateLogs({ parent })))
    )
  )
  : program

// One line per log entry: daemons' output is read by people tailing files and by `berth dev`.
// The minimum level is a service in the root context, so every fiber the daemons fork (and every
// context they capture for gRPC handlers) filters with it.
NodeRuntime.runMain(
  Effect.scoped(supervised).pipe(
    Effect.provideService(References.MinimumLogLevel, logLevel),
    Effect.provide(Logger.layer([Logger.consoleLogFmt]))
  ) as import("effect").Effect.Effect<never, unknown>,
  {
    // A daemon stopped by SIGTERM or Ctrl-C has done what it was asked: exit 0, not 130, so
    // service managers do not report a clean stop as a failure.
    teardown: (exit, onExit) => onExit(Exit.isSuccess(exit) || Cause.hasInterruptsOnly(exit.cause) ? 0 : 1)
  }
)
