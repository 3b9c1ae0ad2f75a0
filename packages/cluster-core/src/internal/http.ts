import { Effect, type Scope } from "effect"
import * as http from "node:http"
import { StartupError } from "../ClusterError.ts"

export type Route = () => Promise<{ readonly contentType: string; readonly body: string }>

/** A tiny read-only HTTP endpoint (metrics, health) bound to the scope. */
export const serve = (
  host: string,
  port: number,
  routes: Readonly<Record<string, Route>>
): Effect.Effect<string, StartupError, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.callback<http.Server, StartupError>((resume) => {
      const server = http.createServer((request, response) => {
        const route = request.method === "GET" ? routes[new URL(request.url ?? "/", "http://x").pathname] : undefined
        if (route === undefined) {
          response.writeHead(request.method === "GET" ? 404 : 405).end()
          return
        }
        route().then(
          ({ contentType, body }) => response.writeHead(200, { "content-type": contentType }).end(body),
          (error: unknown) => response.writeHead(500).end(String(error))
        )
      })
      server.once("error", (error) =>
        resume(Effect.fail(new StartupError({ component: "http", reason: `cannot listen on ${host}:${port}: ${error.message}` }))))
      server.listen(port, host, () => resume(Effect.succeed(server)))
    }),
    (server) =>
      Effect.callback<void>((resume) => {
        server.closeAllConnections()
        server.close(() => resume(Effect.void))
      })
  ).pipe(Effect.map((server) => `${host}:${(server.address() as { port: number }).port}`))
