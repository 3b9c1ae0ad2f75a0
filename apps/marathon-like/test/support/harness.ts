// Test helpers: a marathon-like server in this process on a real testkit cluster, and a tiny
// HTTP client for its API.
import { Server } from "@berth/marathon-like"
import { Effect, Schedule } from "effect"

export interface HttpResult {
  readonly status: number
  readonly headers: Headers
  readonly body: any
  readonly text: string
}

export const request = (base: string, method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Effect.Effect<HttpResult> =>
  Effect.promise(async () => {
    const res = await fetch(base + path, {
      method,
      headers: { "Content-Type": "application/json", ...headers },
      ...(body === undefined ? {} : { body: typeof body === "string" ? body : JSON.stringify(body) })
    })
    const text = await res.text()
    let parsed: unknown = undefined
    try {
      parsed = text.length > 0 ? JSON.parse(text) : undefined
    } catch {
      parsed = undefined
    }
    return { status: res.status, headers: res.headers, body: parsed, text }
  })

export const client = (base: string) => ({
  get: (path: string) => request(base, "GET", path),
  post: (path: string, body?: unknown) => request(base, "POST", path, body),
  put: (path: string, body?: unknown) => request(base, "PUT", path, body),
  patch: (path: string, body?: unknown) => request(base, "PATCH", path, body),
  del: (path: string) => request(base, "DELETE", path)
})

export const serve = (master: string, extra: Partial<Server.Options> = {}) =>
  Server.serve({ master, httpPort: 0, bind: "127.0.0.1", store: "memory:", leaderTtl: "2 seconds", ...extra })

/** Polls `check` until it returns a value (not undefined), up to `timeoutMs`. */
export const eventually = <A, E>(check: Effect.Effect<A | undefined, E>, timeoutMs = 60_000, label = "condition"): Effect.Effect<A> =>
  check.pipe(
    Effect.flatMap((a): Effect.Effect<A, E | "not yet"> => (a === undefined ? Effect.fail("not yet" as const) : Effect.succeed(a))),
    Effect.retry(Schedule.spaced("200 millis")),
    Effect.timeoutOrElse({ duration: timeoutMs, orElse: () => Effect.die(new Error(`timed out waiting for ${label}`)) }),
    Effect.orDie
  )
