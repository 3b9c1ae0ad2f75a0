/**
 * The few Docker Engine API calls the Docker executor makes, as Effects over dockerode. dockerode
 * is loaded on first use: it costs about 35 MB and 0.2 s to load, which agents and executors
 * that never run a container should not pay.
 */
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import type Dockerode from "dockerode"
import { Effect, Schema } from "effect"

/**
 * A Docker Engine API call failed: the engine is unreachable, or it answered with an error
 * (`statusCode` is its HTTP status, e.g. 404 for an image or container that does not exist).
 *
 * @since 0.1.0
 * @category errors
 */
export class DockerEngineError extends Schema.TaggedError<DockerEngineError>()("DockerEngineError", {
  operation: Schema.String,
  message: Schema.String,
  statusCode: Schema.optionalKey(Schema.Number)
}) {}

/** How to reach the engine; without any field: DOCKER_HOST, else the local unix socket. */
export interface Connection {
  readonly socketPath?: string | undefined
  readonly host?: string | undefined
  readonly port?: number | undefined
  readonly protocol?: "http" | "https" | undefined
}

export interface ContainerState {
  readonly running: boolean
  /** False for a container created but never started (its exit code means nothing). */
  readonly started: boolean
  readonly exitCode: number
  readonly oomKilled: boolean
}

export interface Engine {
  /** Where the engine is, for messages: "unix:///var/run/docker.sock" or "tcp://host:port". */
  readonly address: string
  /** The engine's unix socket when it is reached through one (never to be mounted into a task). */
  readonly socketPath: string | undefined
  readonly imageExists: (image: string) => Effect.Effect<boolean, DockerEngineError>
  /** Creates a container and returns its id. */
  readonly create: (body: Dockerode.ContainerCreateOptions) => Effect.Effect<string, DockerEngineError>
  /** The container's multiplexed stdout and stderr, from now on (attach before start to miss nothing). */
  readonly attach: (id: string) => Effect.Effect<NodeJS.ReadableStream, DockerEngineError>
  /** Splits an attach stream into its stdout and stderr. */
  readonly demux: (stream: NodeJS.ReadableStream, stdout: NodeJS.WritableStream, stderr: NodeJS.WritableStream) => void
  readonly start: (id: string) => Effect.Effect<void, DockerEngineError>
  /** Waits until the container is not running and returns its exit status. */
  readonly wait: (id: string) => Effect.Effect<number, DockerEngineError>
  readonly inspect: (id: string) => Effect.Effect<ContainerState, DockerEngineError>
  /**
   * The engine sends the image's stop signal (SIGTERM unless the image says otherwise), then
   * SIGKILL after `seconds`; succeeds once the container stopped (or was not running).
   */
  readonly stop: (id: string, seconds: number) => Effect.Effect<void, DockerEngineError>
  /** Removes a container (by id or name) whatever its state, with its anonymous volumes; a missing one is fine. */
  readonly remove: (idOrName: string) => Effect.Effect<void, DockerEngineError>
  /** Ids of the containers (running or not) carrying every one of `labels`. */
  readonly list: (labels: Record<string, string>) => Effect.Effect<Array<string>, DockerEngineError>
}

interface ModemError {
  readonly statusCode?: number
  readonly json?: { readonly message?: string } | null
  readonly reason?: string
  readonly code?: string
  readonly message?: string
}

const defaultSocket = "/var/run/docker.sock"

/** The socket dockerode will use for `connection`, following DOCKER_HOST as docker-modem does. */
const socketOf = (connection: Connection | undefined): string | undefined => {
  if (connection?.socketPath !== undefined) return connection.socketPath
  if (connection?.host !== undefined) return undefined
  const fromEnv = process.env.DOCKER_HOST
  if (fromEnv === undefined || fromEnv === "") {
    // docker-modem prefers a rootless/desktop socket under the home directory when there is one.
    const home = path.join(os.homedir(), ".docker", "run", "docker.sock")
    return fs.existsSync(home) ? home : defaultSocket
  }
  return fromEnv.startsWith("unix://") ? (fromEnv.slice("unix://".length) || defaultSocket) : undefined
}

const toError = (operation: string, address: string) => (cause: unknown): DockerEngineError => {
  const error = (cause ?? {}) as ModemError
  const statusCode = typeof error.statusCode === "number" ? error.statusCode : undefined
  const detail = error.json?.message ?? error.message ?? String(cause)
  if (statusCode === undefined && (error.code === "ENOENT" || error.code === "ECONNREFUSED" || error.code === "EACCES")) {
    return new DockerEngineError({
      operation,
      message: `cannot reach the Docker engine at ${address} (${error.code}): is dockerd running? ` +
        "(scripts/ci/docker.sh installs and starts one)"
    })
  }
  return new DockerEngineError({
    operation,
    message: detail.trim(),
    ...(statusCode === undefined ? {} : { statusCode })
  })
}

export const connect = (connection?: Connection): Effect.Effect<Engine, DockerEngineError> =>
  Effect.gen(function*() {
    const socketPath = socketOf(connection)
    const address = socketPath !== undefined
      ? `unix://${socketPath}`
      : connection?.host !== undefined
      ? `${connection.protocol ?? "http"}://${connection.host}:${connection.port ?? 2375}`
      : process.env.DOCKER_HOST ?? `unix://${defaultSocket}`
    const module = yield* Effect.tryPromise({
      try: () => import("dockerode"),
      catch: (cause) =>
        new DockerEngineError({ operation: "load dockerode", message: cause instanceof Error ? cause.message : String(cause) })
    })
    const Docker = module.default
    const options: Dockerode.DockerOptions = {}
    if (connection?.socketPath !== undefined) options.socketPath = connection.socketPath
    if (connection?.host !== undefined) options.host = connection.host
    if (connection?.port !== undefined) options.port = connection.port
    if (connection?.protocol !== undefined) options.protocol = connection.protocol
    const docker = new Docker(options)
    const call = <A>(operation: string, run: (signal: AbortSignal) => Promise<A>): Effect.Effect<A, DockerEngineError> =>
      Effect.tryPromise({ try: run, catch: toError(operation, address) })
    const ignoring = (codes: ReadonlyArray<number>) => (error: DockerEngineError) =>
      error.statusCode !== undefined && codes.includes(error.statusCode) ? Effect.void : Effect.fail(error)
    // dockerode's typings omit `abortSignal` from some option types that do honour it.
    const abortable = (signal: AbortSignal) => ({ abortSignal: signal }) as {}

    const engine: Engine = {
      address,
      socketPath,
      imageExists: (image) =>
        call(`inspect image ${image}`, (signal) => docker.getImage(image).inspect(abortable(signal))).pipe(
          Effect.as(true),
          Effect.catchIf((error) => error.statusCode === 404, () => Effect.succeed(false))
        ),
      create: (body) =>
        call("create container", (signal) => docker.createContainer({ ...body, abortSignal: signal })).pipe(
          Effect.map((container) => container.id)
        ),
      attach: (id) =>
        call(
          "attach to container",
          (signal) =>
            docker.getContainer(id).attach({ stream: true, stdout: true, stderr: true, logs: false, ...abortable(signal) })
        ),
      demux: (stream, stdout, stderr) => docker.modem.demuxStream(stream, stdout, stderr),
      start: (id) => call("start container", (signal) => docker.getContainer(id).start({ abortSignal: signal })).pipe(Effect.asVoid),
      wait: (id) =>
        call(
          "wait for container",
          (signal) => docker.getContainer(id).wait(abortable(signal)) as Promise<{ StatusCode: number }>
        ).pipe(Effect.map((result) => result.StatusCode)),
      inspect: (id) =>
        call("inspect container", (signal) => docker.getContainer(id).inspect({ abortSignal: signal })).pipe(
          Effect.map((info) => ({
            running: info.State.Running,
            started: info.State.Status !== "created",
            exitCode: info.State.ExitCode,
            oomKilled: info.State.OOMKilled
          }))
        ),
      stop: (id, seconds) =>
        call("stop container", (signal) => docker.getContainer(id).stop({ t: seconds, ...abortable(signal) })).pipe(
          Effect.asVoid,
          // 304: not running any more; 404: already removed.
          Effect.catch(ignoring([304, 404]))
        ),
      remove: (idOrName) =>
        call("remove container", (signal) =>
          docker.getContainer(idOrName).remove({ force: true, v: true, ...abortable(signal) })).pipe(
            Effect.asVoid,
            // 404: never created or already gone; 409: removal already in progress.
            Effect.catch(ignoring([404, 409]))
          ),
      list: (labels) =>
        call("list containers", (signal) =>
          docker.listContainers({
            all: true,
            filters: { label: Object.entries(labels).map(([key, value]) => `${key}=${value}`) },
            ...abortable(signal)
          })).pipe(Effect.map((containers) => containers.map((c) => c.Id)))
    }
    return engine
  })
