import * as fs from "node:fs"
import { Config, Effect, Option } from "effect"
import type { EtcdOptions } from "../StateStore.ts"
import { InvalidStoreUrl } from "../StoreError.ts"

export type Parsed =
  | { readonly _tag: "memory" }
  | { readonly _tag: "sqlite"; readonly path: string }
  | {
    readonly _tag: "etcd"
    readonly endpoints: ReadonlyArray<string>
    readonly prefix: string | undefined
    readonly files: { readonly ca?: string; readonly cert?: string; readonly key?: string }
    readonly username: string | undefined
  }

export const FORMS = `"memory:", "sqlite:<path>" or "etcd:<host:port>[,<host:port>...][?prefix=...&ca=<file>&cert=<file>` +
  `&key=<file>&username=<user>]"`

const ENDPOINT = /^(https?:\/\/)?(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/
const QUERY_KEYS = new Set(["prefix", "ca", "cert", "key", "username"])

const invalid = (url: string, rule: string) =>
  new InvalidStoreUrl({ url, message: `invalid store URL ${JSON.stringify(url)}: ${rule} (expected ${FORMS})` })

/** Syntax only: no file is read and nothing is opened, so flags can be checked before anything starts. */
export const parseSync = (url: string): Parsed | InvalidStoreUrl => {
  if (typeof url !== "string") return invalid(String(url), "a store URL must be a string")
  if (url === "memory:") return { _tag: "memory" }
  if (url.startsWith("sqlite:")) {
    const path = url.slice("sqlite:".length)
    if (path.length === 0) return invalid(url, "the path after \"sqlite:\" is missing")
    if (path.startsWith("//")) {
      return invalid(url, `the "sqlite://" form is not accepted because it is ambiguous; put the file path right ` +
        `after the colon, e.g. "sqlite:.berth/state.db" or "sqlite:/var/lib/berth/state.db"`)
    }
    return { _tag: "sqlite", path }
  }
  if (url.startsWith("etcd:")) {
    const rest = url.slice("etcd:".length)
    if (rest.startsWith("//")) return invalid(url, `write the endpoints right after "etcd:", e.g. "etcd:127.0.0.1:2379"`)
    const [list = "", query, ...extra] = rest.split("?")
    if (extra.length > 0) return invalid(url, `"?" may appear once`)
    const endpoints = list.split(",")
    if (list === "" || endpoints.some((e) => e === "")) return invalid(url, "at least one endpoint is required, separated by commas")
    for (const endpoint of endpoints) {
      const match = ENDPOINT.exec(endpoint)
      if (match === null || Number(match[3]) > 65535 || Number(match[3]) === 0) {
        return invalid(url, `endpoint ${JSON.stringify(endpoint)} must be host:port or http(s)://host:port`)
      }
    }
    const params = new URLSearchParams(query ?? "")
    if (params.has("password")) return invalid(url, "the password is read from BERTH_ETCD_PASSWORD, never from the URL")
    for (const name of params.keys()) {
      if (!QUERY_KEYS.has(name)) return invalid(url, `unknown option ${JSON.stringify(name)} (known: ${[...QUERY_KEYS].join(", ")})`)
    }
    const file = (name: string) => {
      const value = params.get(name)
      return value === null ? {} : { [name]: value }
    }
    if ((params.has("cert") || params.has("key")) && !(params.has("cert") && params.has("key"))) {
      return invalid(url, "cert and key go together (mutual TLS)")
    }
    return {
      _tag: "etcd",
      endpoints: endpoints.map((e) => (/^https?:\/\//.test(e) ? e : `http://${e}`)),
      prefix: params.get("prefix") ?? undefined,
      files: { ...file("ca"), ...file("cert"), ...file("key") },
      username: params.get("username") ?? undefined
    }
  }
  return invalid(url, "unknown scheme")
}

export const parse = (url: string): Effect.Effect<
  | { readonly _tag: "memory" }
  | { readonly _tag: "sqlite"; readonly path: string }
  | { readonly _tag: "etcd"; readonly options: EtcdOptions },
  InvalidStoreUrl
> =>
  Effect.gen(function*() {
    const parsed = parseSync(url)
    if (parsed instanceof InvalidStoreUrl) return yield* parsed
    if (parsed._tag !== "etcd") return parsed
    const read = (name: string, file: string | undefined) =>
      file === undefined ? Effect.succeed(undefined) : Effect.try({
        try: () => fs.readFileSync(file, "utf8"),
        catch: (cause) => invalid(url, `cannot read the ${name} file ${file}: ${(cause as Error).message}`)
      })
    const tls = {
      ca: yield* read("ca", parsed.files.ca),
      cert: yield* read("cert", parsed.files.cert),
      key: yield* read("key", parsed.files.key)
    }
    const password = yield* Config.option(Config.Redacted("BERTH_ETCD_PASSWORD")).pipe(
      Effect.mapError((error) => invalid(url, `BERTH_ETCD_PASSWORD: ${error.message}`))
    )
    if (parsed.username !== undefined && Option.isNone(password)) {
      return yield* invalid(url, "username is set but BERTH_ETCD_PASSWORD is not")
    }
    const options: EtcdOptions = {
      endpoints: parsed.endpoints,
      ...(parsed.prefix === undefined ? {} : { prefix: parsed.prefix }),
      ...(tls.ca === undefined && tls.cert === undefined ? {} : { tls }),
      ...(parsed.username === undefined || Option.isNone(password)
        ? {}
        : { auth: { username: parsed.username, password: password.value } })
    }
    return { _tag: "etcd" as const, options }
  })
