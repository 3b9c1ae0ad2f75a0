#!/usr/bin/env node
// marathon-like serve: runs one instance (HTTP API + UI; the scheduler while it leads).
// Flags override environment variables, which override the defaults.
import { NodeRuntime } from "@effect/platform-node"
import { Effect } from "effect"
import * as fs from "node:fs"
import * as nodePath from "node:path"
import { parseArgs } from "node:util"
import * as Server from "../Server.ts"

const usage = `usage: marathon-like serve [options]
       marathon-like forget-framework [--state <url>]   delete the stored framework id (after the master removed the framework)

  --master <host:port[,…]>   the Berth master (env MARATHON_MASTER, default 127.0.0.1:5050)
  --http-port <port>         HTTP port, 0 for any (env MARATHON_HTTP_PORT, default 8080)
  --bind <address>           listen address (env MARATHON_BIND, default 0.0.0.0)
  --hostname <name>          hostname advertised to clients and peers (env MARATHON_HOSTNAME, default 127.0.0.1)
  --state <url>              sqlite:<path> | etcd:<host:port>[,…] | memory: (env MARATHON_STATE, default sqlite:.marathon-like/state.db)
  --framework-name <name>    framework name (env MARATHON_FRAMEWORK_NAME, default marathon-like)
  --role <role>              framework role; resident apps reserve for it (env MARATHON_ROLE, default marathon)
  --max-body-bytes <n>       request body limit (env MARATHON_MAX_BODY_BYTES, default 1048576)
`

const main = () => {
  const [command, ...rest] = process.argv.slice(2)
  if (command === "forget-framework") return forget(rest)
  if (command !== "serve") {
    process.stderr.write(command === undefined || command === "--help" || command === "help" ? usage : `unknown command "${command}"\n\n${usage}`)
    process.exit(command === undefined || command === "--help" || command === "help" ? 0 : 2)
  }
  let values: Record<string, string | boolean | undefined>
  try {
    values = parseArgs({
      args: rest,
      options: {
        master: { type: "string" }, "http-port": { type: "string" }, bind: { type: "string" }, hostname: { type: "string" },
        state: { type: "string" }, "framework-name": { type: "string" }, role: { type: "string" }, "max-body-bytes": { type: "string" },
        help: { type: "boolean" }
      }
    }).values
  } catch (e) {
    process.stderr.write(`${(e as Error).message}\n\n${usage}`)
    process.exit(2)
  }
  if (values.help === true) {
    process.stdout.write(usage)
    process.exit(0)
  }
  const pick = (flag: string, env: string): string | undefined => (values[flag] as string | undefined) ?? process.env[env]
  const int = (flag: string, env: string, fallback: number): number => {
    const text = pick(flag, env)
    if (text === undefined) return fallback
    const n = Number(text)
    if (!Number.isInteger(n) || n < 0) {
      process.stderr.write(`--${flag}: expected a non-negative integer, got "${text}"\n`)
      process.exit(2)
    }
    return n
  }
  const options: Server.Options = {
    master: pick("master", "MARATHON_MASTER") ?? "127.0.0.1:5050",
    httpPort: int("http-port", "MARATHON_HTTP_PORT", 8080),
    bind: pick("bind", "MARATHON_BIND") ?? "0.0.0.0",
    hostname: pick("hostname", "MARATHON_HOSTNAME") ?? "127.0.0.1",
    store: pick("state", "MARATHON_STATE") ?? "sqlite:.marathon-like/state.db",
    frameworkName: pick("framework-name", "MARATHON_FRAMEWORK_NAME") ?? "marathon-like",
    role: pick("role", "MARATHON_ROLE") ?? "marathon",
    maxBodyBytes: int("max-body-bytes", "MARATHON_MAX_BODY_BYTES", 1024 * 1024)
  }
  // SQLite needs the directory of its file to exist.
  if (options.store!.startsWith("sqlite:")) fs.mkdirSync(nodePath.dirname(options.store!.slice("sqlite:".length)), { recursive: true })
  const program = Effect.scoped(Effect.gen(function*() {
    const server = yield* Server.serve(options)
    // The exact line `npm start` and tests wait for.
    process.stdout.write(`marathon-like listening on ${server.url} (UI ${server.url}/ui/)\n`)
    // Runs until the master removes the framework (FrameworkGone: exit 1 with the explanation).
    return yield* server.stopped
  })).pipe(Effect.tapError((e) => Effect.sync(() => process.stderr.write(`marathon-like: ${e.message}\n`))))
  NodeRuntime.runMain(program)
}

const forget = (args: ReadonlyArray<string>) => {
  let state: string | undefined
  try {
    state = parseArgs({ args: [...args], options: { state: { type: "string" } } }).values.state
  } catch (e) {
    process.stderr.write(`${(e as Error).message}\n\n${usage}`)
    process.exit(2)
  }
  const url = state ?? process.env.MARATHON_STATE ?? "sqlite:.marathon-like/state.db"
  const program = Effect.scoped(Server.forgetFramework(url)).pipe(
    Effect.tap((deleted) => Effect.sync(() => process.stdout.write(deleted ? `deleted the stored framework id in ${url}\n` : `no framework id stored in ${url}\n`))),
    Effect.tapError((e) => Effect.sync(() => process.stderr.write(`marathon-like: ${e.message}\n`)))
  )
  NodeRuntime.runMain(program, { disableErrorReporting: true })
}

main()
