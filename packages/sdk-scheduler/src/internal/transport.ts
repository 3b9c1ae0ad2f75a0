import * as grpc from "@grpc/grpc-js"
import * as fs from "node:fs"
import type { Credentials, Tls } from "../SchedulerSession.ts"

/**
 * The channel a session talks over: TLS from PEM files or text, and credentials sent with every
 * call. (The cluster core has the same helpers for agents and operator tools; an SDK may not
 * import it, so this is their scheduler-side twin.)
 */
export interface Transport {
  readonly channel: () => grpc.ChannelCredentials
  readonly options: grpc.ClientOptions
}

/** PEM text from a value that is PEM text or a file path; a string names the problem. */
const pem = (field: string, value: string): Buffer | string => {
  let bytes: Buffer
  if (value.includes("-----BEGIN ")) {
    bytes = Buffer.from(value)
  } else {
    try {
      bytes = fs.readFileSync(value)
    } catch (error) {
      return `${field}: cannot read "${value}": ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`
    }
  }
  return bytes.includes("-----BEGIN ") ? bytes : `${field}: "${value}" holds no PEM block (-----BEGIN ...)`
}

export const authorization = (credentials: Credentials): string =>
  "token" in credentials
    ? `Bearer ${credentials.token}`
    : `Basic ${Buffer.from(`${credentials.principal}:${credentials.secret}`, "utf8").toString("base64")}`

/** The rule broken by `credentials`, as [field, rule], or undefined. */
export const credentialsProblem = (credentials: Credentials): readonly [string, string] | undefined => {
  if ("token" in credentials) {
    return typeof credentials.token === "string" && /^[\x21-\x7e]+$/.test(credentials.token)
      ? undefined
      : ["credentials.token", "must be a non-empty token of printable ASCII without spaces"]
  }
  if (typeof credentials.principal !== "string" || credentials.principal === "" || credentials.principal.includes(":")) {
    return ["credentials.principal", 'must be a non-empty principal without ":"']
  }
  if (typeof credentials.secret !== "string" || credentials.secret === "") return ["credentials.secret", "must not be empty"]
  return undefined
}

/** Builds the transport, or returns [field, rule] for the first bad option. */
export const make = (tls: Tls | undefined, credentials: Credentials | undefined): Transport | readonly [string, string] => {
  const options: grpc.ClientOptions = credentials === undefined ? {} : {
    interceptors: [(callOptions, nextCall) =>
      new grpc.InterceptingCall(nextCall(callOptions), {
        start: (metadata, listener, next) => {
          metadata.set("authorization", authorization(credentials))
          next(metadata, listener)
        }
      })]
  }
  if (tls === undefined) return { channel: () => grpc.credentials.createInsecure(), options }
  if ((tls.cert === undefined) !== (tls.key === undefined)) {
    return tls.cert === undefined
      ? ["tls.cert", "is required with tls.key (a client certificate and its key go together)"]
      : ["tls.key", "is required with tls.cert (a client certificate and its key go together)"]
  }
  const read: Record<"ca" | "cert" | "key", Buffer | null> = { ca: null, cert: null, key: null }
  for (const field of ["ca", "cert", "key"] as const) {
    const value = tls[field]
    if (value === undefined) continue
    const bytes = pem(`tls.${field}`, value)
    if (typeof bytes === "string") return [`tls.${field}`, bytes.slice(`tls.${field}: `.length)]
    read[field] = bytes
  }
  return { channel: () => grpc.credentials.createSsl(read.ca, read.key, read.cert), options }
}
