import { Resources } from "@berth/proto"
import * as fs from "node:fs"
import { parseArgs } from "node:util"
import * as Detect from "../agent/detect.ts"

/** A flag that broke a rule; the CLI prints it as one line and exits 2. */
export class FlagError extends Error {
  override readonly name = "FlagError"
}

type Kind =
  | "string"
  | "port"
  | "endpoint"
  | "endpoints"
  | "seconds"
  | "count"
  | "resources"
  | "attributes"
  | "store"
  | "boolean"
  | "file"
  | "rate"
  | "authenticate"
  | "log-level"

export interface FlagSpec {
  readonly kind: Kind
  readonly description: string
  readonly default?: string
}

/** `--log-level` values and the Effect log levels they set as the minimum ("none" logs nothing). */
export const LOG_LEVELS = { debug: "Debug", info: "Info", warn: "Warn", error: "Error", none: "None" } as const

/**
 * The minimum log level of a daemon: `--log-level` when given, else `BERTH_LOG_LEVEL`, else info.
 * A bad value throws a FlagError naming where it came from and the allowed values.
 */
export const logLevel = (flag: string, env: string | undefined): (typeof LOG_LEVELS)[keyof typeof LOG_LEVELS] => {
  const value = flag !== "" ? flag : env === undefined || env === "" ? "info" : env
  if (!Object.hasOwn(LOG_LEVELS, value)) {
    const source = flag !== "" ? "--log-level" : "--log-level (from BERTH_LOG_LEVEL)"
    throw new FlagError(`${source}: must be one of ${Object.keys(LOG_LEVELS).join(", ")} (got "${value}")`)
  }
  return LOG_LEVELS[value as keyof typeof LOG_LEVELS]
}

const ENDPOINT = /^[A-Za-z0-9.-]+:\d{1,5}$|^\[[0-9a-fA-F:]+\]:\d{1,5}$/

const check = (name: string, kind: Kind, value: string): string => {
  const fail = (rule: string): never => {
    throw new FlagError(`--${name}: ${rule} (got "${value}")`)
  }
  switch (kind) {
    case "port": {
      const port = Number(value)
      if (!/^\d+$/.test(value) || port > 65535) fail("must be an integer port in 0..65535")
      return value
    }
    case "endpoint":
      if (!ENDPOINT.test(value) || Number(value.slice(value.lastIndexOf(":") + 1)) > 65535) fail("must be host:port")
      return value
    case "endpoints":
      for (const part of value.split(",")) {
        const e = part.trim()
        if (!ENDPOINT.test(e) || Number(e.slice(e.lastIndexOf(":") + 1)) > 65535) fail("must be host:port[,host:port...]")
      }
      return value
    case "seconds":
      if (!/^\d+(\.\d+)?$/.test(value)) fail("must be a number of seconds >= 0")
      return value
    case "count":
      if (!/^\d+$/.test(value) || Number(value) < 1 || Number(value) > 64) fail("must be an integer in 1..64")
      return value
    case "resources":
      try {
        Resources.parse(value)
      } catch (error) {
        fail((error as Error).message)
      }
      return value
    case "attributes":
      try {
        Detect.attributes(value)
      } catch (error) {
        fail((error as Error).message)
      }
      return value
    case "store":
      if (
        !(value === "memory:" ||
          (value.startsWith("sqlite:") && value.length > "sqlite:".length) ||
          /^etcd:[^/?]/.test(value))
      ) {
        fail('must be "memory:", "sqlite:<path>" or "etcd:<host:port>[,<host:port>...]"')
      }
      return value
    case "file":
      try {
        fs.accessSync(value, fs.constants.R_OK)
        if (!fs.statSync(value).isFile()) fail("must be a readable file")
      } catch (error) {
        if (error instanceof FlagError) throw error
        fail(`must be a readable file: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`)
      }
      return value
    case "rate":
      if (!/^\d+(\.\d+)?\/s(,burst=\d+)?$/.test(value)) fail('must be "<n>/s" or "<n>/s,burst=<m>", e.g. "2/s,burst=10"')
      if (!(Number(value.slice(0, value.indexOf("/"))) > 0)) fail("the rate must be > 0")
      if (/,burst=0+$/.test(value)) fail("the burst must be >= 1")
      return value
    case "authenticate": {
      const parts = value.split(",").map((p) => p.trim())
      const known = ["frameworks", "operators", "agents"]
      if (!(value === "none" || parts.every((p) => known.includes(p)))) {
        fail('must be "none" or a comma-separated list of frameworks, operators, agents')
      }
      return value
    }
    case "log-level":
      if (!Object.hasOwn(LOG_LEVELS, value)) fail(`must be one of ${Object.keys(LOG_LEVELS).join(", ")}`)
      return value
    default:
      if (value.trim() === "") fail("must not be empty")
      return value
  }
}

/**
 * Parses and validates `argv` against `specs`: unknown flags, missing values and values breaking
 * a flag's rule all throw a FlagError naming the flag and the rule. Nothing starts on bad flags.
 */
export const parse = <S extends Record<string, FlagSpec>>(
  specs: S,
  argv: ReadonlyArray<string>
): { readonly [K in keyof S]: string } & { readonly help: boolean } => {
  // `--port -1` should be judged by the port's rule, not refused as an ambiguous option: glue a
  // value that looks like a short flag to its option.
  const args: Array<string> = []
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!
    const spec = arg.startsWith("--") ? specs[arg.slice(2)] : undefined
    const next = argv[i + 1]
    if (spec !== undefined && spec.kind !== "boolean" && next !== undefined && /^-[^-]/.test(next)) {
      args.push(`${arg}=${next}`)
      i++
    } else {
      args.push(arg)
    }
  }
  let parsed
  try {
    parsed = parseArgs({
      args,
      strict: true,
      allowPositionals: false,
      options: {
        help: { type: "boolean", short: "h" },
        ...Object.fromEntries(
          Object.entries(specs).map(([name, spec]) => [name, { type: spec.kind === "boolean" ? "boolean" : "string" }])
        )
      } as Record<string, { type: "string" | "boolean" }>
    })
  } catch (error) {
    throw new FlagError((error as Error).message.split("\n")[0]!.replace(/\. To specify.*$/, ""))
  }
  const values = parsed.values as Record<string, string | boolean | undefined>
  const out: Record<string, string | boolean> = { help: values.help === true }
  for (const [name, spec] of Object.entries(specs)) {
    const value = values[name]
    if (spec.kind === "boolean") {
      out[name] = value === true ? "true" : ""
      continue
    }
    if (value === undefined) {
      if (spec.default === undefined) {
        if (out.help === true) continue
        throw new FlagError(`--${name}: is required`)
      }
      out[name] = spec.default
      continue
    }
    out[name] = check(name, spec.kind, value as string)
  }
  return out as never
}

/** The help text of a command, generated from its flag specs. */
export const usage = (command: string, summary: string, specs: Record<string, FlagSpec>): string =>
  [
    `Usage: berth ${command} [flags]`,
    "",
    summary,
    "",
    "Flags:",
    ...Object.entries(specs).map(([name, spec]) =>
      `  --${name.padEnd(22)} ${spec.description}${spec.default === undefined ? " (required)" : spec.default === "" ? "" : ` (default: ${spec.default})`}`
    ),
    `  --${"help".padEnd(22)} Show this help`
  ].join("\n")
