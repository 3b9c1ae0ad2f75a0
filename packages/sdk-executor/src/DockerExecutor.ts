/**
 * The built-in Docker executor: runs one task whose `container.type` is DOCKER as a container of
 * the agent's Docker engine, through the Docker Engine API (dockerode), and reports STARTING,
 * RUNNING, (KILLING,) then one terminal status, like the command executor. The agent runs it as a
 * fiber in its own process over an in-process session. See docs/docker.md.
 *
 * @since 0.1.0
 */
import { type Duration, Effect } from "effect"
import type { v1 } from "@berth/proto"
import type { ExecutorSession } from "./ExecutorSession.ts"
import * as engine from "./internal/dockerEngine.ts"
import * as internal from "./internal/dockerExecutor.ts"
import * as task from "./internal/dockerTask.ts"

/**
 * A Docker Engine API call failed: the engine is unreachable, or it answered with an error
 * (`statusCode` is its HTTP status). The executor turns it into a task status; it never escapes
 * `run`.
 *
 * @example
 * ```ts
 * import { DockerExecutor } from "@berth/sdk-executor"
 *
 * const error = new DockerExecutor.DockerEngineError({
 *   operation: "create container",
 *   message: "No such image: app:1",
 *   statusCode: 404
 * })
 * ```
 *
 * @since 0.1.0
 * @category errors
 */
export const DockerEngineError = engine.DockerEngineError

/**
 * @since 0.1.0
 * @category errors
 */
export type DockerEngineError = engine.DockerEngineError

/**
 * How the executor reaches the Docker engine. With no field set it follows `DOCKER_HOST` like the
 * docker CLI, else uses the local socket `/var/run/docker.sock`.
 *
 * @example
 * ```ts
 * import type { DockerExecutor } from "@berth/sdk-executor"
 *
 * const local: DockerExecutor.Connection = { socketPath: "/var/run/docker.sock" }
 * const remote: DockerExecutor.Connection = { host: "10.0.0.5", port: 2375, protocol: "http" }
 * ```
 *
 * @since 0.1.0
 * @category models
 */
export type Connection = engine.Connection

/**
 * The labels every container the executor creates carries, so that operators (and the test
 * suites) can find them: `docker ps -a --filter label=berth.task-id`. Task labels may not use the
 * `berth.` prefix.
 *
 * @example
 * ```ts
 * import { DockerExecutor } from "@berth/sdk-executor"
 *
 * const filter = `label=${DockerExecutor.labels.taskId}=web-1`
 * ```
 *
 * @since 0.1.0
 * @category constants
 */
export const labels: {
  readonly taskId: "berth.task-id"
  readonly frameworkId: "berth.framework-id"
  readonly executorId: "berth.executor-id"
  readonly agentId: "berth.agent-id"
} = task.labelKeys

/**
 * Where the task's sandbox is mounted in its container by default; it is also the container's
 * working directory and `BERTH_SANDBOX`.
 *
 * @since 0.1.0
 * @category constants
 */
export const sandboxPath: string = task.defaultSandboxPath

/**
 * A rule a Docker task breaks: `field` is a path below the object that was checked, `rule` says
 * what it must be. `unsupported` marks a well-formed request this containerizer does not serve
 * (such as `forcePullImage`), as opposed to an invalid one; `rule` then names that feature.
 *
 * @since 0.1.0
 * @category models
 */
export interface Problem {
  readonly field: string
  readonly rule: string
  readonly unsupported?: boolean
}

/**
 * The first rule a DOCKER `ContainerInfo` breaks, with `field` relative to it
 * (`"docker.portMappings[0].containerPort"`), or `undefined`. The master checks launches with it
 * before it accepts them, and the executor again before it creates anything. It does not check
 * what only the agent can know (that the image and host paths exist) nor that host ports were
 * offered (the master checks those against the task's `ports` resources).
 *
 * @example
 * ```ts
 * import { v1 } from "@berth/proto"
 * import { DockerExecutor } from "@berth/sdk-executor"
 *
 * const problem = DockerExecutor.containerProblem(v1.ContainerInfo.create({
 *   type: v1.ContainerInfo_Type.DOCKER,
 *   docker: { image: "app:1", portMappings: [{ hostPort: 31000, containerPort: 0, protocol: "tcp" }] }
 * }))
 * // { field: "docker.portMappings[0].containerPort", rule: "must be in 1..65535" }
 * ```
 *
 * @since 0.1.0
 * @category validation
 */
export const containerProblem: (container: v1.ContainerInfo) => Problem | undefined = (container) =>
  task.containerProblem(container)

/**
 * The first rule a Docker task breaks, with `field` relative to the TaskInfo (`"container.…"`,
 * `"command.…"`), or `undefined`: the container's rules plus those on the command (a shell
 * command must not be empty; an empty argv runs the image's own entrypoint and command) and on
 * what this executor does not serve yet (artifact URIs, `command.user`, health and readiness
 * checks). Assumes `container.type` is DOCKER.
 *
 * @example
 * ```ts
 * import { v1 } from "@berth/proto"
 * import { DockerExecutor } from "@berth/sdk-executor"
 *
 * const problem = DockerExecutor.taskProblem(v1.TaskInfo.create({
 *   taskId: "t1",
 *   command: { shell: true, value: "echo hi" },
 *   container: { type: v1.ContainerInfo_Type.DOCKER, docker: { image: "" } }
 * }))
 * // { field: "container.docker.image", rule: "is required: ..." }
 * ```
 *
 * @since 0.1.0
 * @category validation
 */
export const taskProblem: (info: v1.TaskInfo) => Problem | undefined = (info) => task.taskProblem(info)

/**
 * Lets the task's container outlive the executor (and the agent running it), so that a later
 * executor can take it over with {@link RunOptions.recover}.
 *
 * @example
 * ```ts
 * import type { DockerExecutor } from "@berth/sdk-executor"
 *
 * const checkpoint: DockerExecutor.CheckpointOptions = {
 *   onInterrupt: "leave",
 *   exitStatusFile: "/var/lib/berth/checkpoints/web-1/exit_status"
 * }
 * ```
 *
 * @since 0.1.0
 * @category models
 */
export interface CheckpointOptions {
  /**
   * What interrupting `run` does to the running task's container: "leave" it running (the
   * default with a checkpoint) or "kill" it (remove it, as without a checkpoint). Containers made
   * for a launch that never got to run are removed either way; KILL and SHUTDOWN always stop.
   */
  readonly onInterrupt?: "kill" | "leave" | undefined
  /**
   * A file (outside the sandbox, where the task cannot touch it) where the executor records the
   * container's exit status before it removes the container. A later `recover` that finds no
   * container reads it: the task ran and ended, and its terminal status is reported from it,
   * instead of the task being started again. Give the same file to the recovering executor.
   */
  readonly exitStatusFile?: string | undefined
}

/**
 * A task started by an earlier Docker executor, to take over instead of waiting for a launch. Its
 * container is found by its labels (framework id, executor id and agent id of the session).
 *
 * @since 0.1.0
 * @category models
 */
export interface Recovered {
  readonly task: v1.TaskInfo
  /** Set when the task was being killed: the kill is finished and the task ends KILLED with this reason. */
  readonly killReason?: v1.TaskStatus_Reason | undefined
}

/**
 * @since 0.1.0
 * @category models
 */
export interface RunOptions {
  /** The task's sandbox on the agent: mounted into the container, holds `stdout` and `stderr`. */
  readonly sandbox: string
  /** Environment for the container, before the task's own variables and the BERTH_* ones. */
  readonly env?: Record<string, string> | undefined
  /** Stop grace (SIGTERM → SIGKILL) when neither the kill nor the task gives one. Default 3 seconds. */
  readonly defaultGracePeriodSeconds?: number | undefined
  /** The Docker engine. Default: `DOCKER_HOST`, else `/var/run/docker.sock`. */
  readonly docker?: Connection | undefined
  /** The host address port mappings are published on. Default `127.0.0.1` (loopback only). */
  readonly portBindHost?: string | undefined
  /** Where the sandbox is mounted in the container. Default `/mnt/sandbox`. */
  readonly sandboxPath?: string | undefined
  /**
   * Run Docker's init (tini) as PID 1, so that the stop signal reaches the command and zombies are
   * reaped. Default true: a shell as PID 1 ignores SIGTERM and would always wait out the grace.
   */
  readonly init?: boolean | undefined
  /** The most the engine may take to create and start the container. Default 2 minutes. */
  readonly launchTimeout?: Duration.Input | undefined
  /** Let the container outlive this executor (see {@link CheckpointOptions}). */
  readonly checkpoint?: CheckpointOptions | undefined
  /**
   * Take over the container of a task an earlier executor started. Running: the executor
   * re-attaches (no STARTING or RUNNING again; the container's output is appended to the sandbox
   * files again from now on, what it wrote meanwhile is in `docker logs`), and KILL, SHUTDOWN and
   * its exit work as usual. Ended meanwhile: its terminal status is reported at once from the
   * container's exit status (or out-of-memory kill) and the container is removed. No container
   * (the agent restarted between the launch and the container's creation): with an exit recorded
   * in `checkpoint.exitStatusFile` (it ended and was removed before its terminal status got out),
   * its terminal status is reported from it; with `killReason`, KILLED with that reason and no
   * container is created; otherwise the task is launched now as for a LAUNCH (STARTING, the image
   * check, create, start, RUNNING), as a Mesos executor that outlived its agent would: nothing of
   * it ran, so it is never FAILED for the restart. Only when the engine cannot be asked is it
   * FAILED with REASON_EXECUTOR_TERMINATED (starting another container could run it twice).
   */
  readonly recover?: Recovered | undefined
}

/**
 * Runs the Docker executor over the session's events until its task has a terminal status (or a
 * shutdown arrives with nothing running, or the events end).
 *
 * - launch: validates the task (`taskProblem`; a problem is ERROR with REASON_TASK_INVALID and a
 *   message naming the field), then STARTING; checks that the image is present on the engine
 *   (it never pulls: a missing image is FAILED with REASON_CONTAINER_LAUNCH_FAILED naming the
 *   image); creates the container (command, environment with BERTH_*, labels, port mappings
 *   published on `portBindHost`, network, sandbox and volume bind mounts, memory and cpu shares
 *   from the task's `mem` and `cpus`, rlimits), attaches its output to the sandbox's `stdout` and
 *   `stderr` files, starts it, RUNNING. Any failure on the way is FAILED with
 *   REASON_CONTAINER_LAUNCH_FAILED and removes what was created.
 * - exit: FINISHED on status 0, FAILED (REASON_COMMAND_EXECUTOR_FAILED, `exitCode`) otherwise,
 *   FAILED with REASON_CONTAINER_LIMITATION_MEMORY when the kernel killed it for exceeding its
 *   memory; KILLED (the kill's reason, else REASON_KILLED_BY_SCHEDULER) when a kill was requested.
 *   The container is removed before the terminal status is sent.
 * - kill: KILLING, then the engine stops the container: its stop signal (SIGTERM unless the image
 *   says otherwise), SIGKILL after the grace period (kill's policy, else the task's, else
 *   `defaultGracePeriodSeconds`, rounded up to whole seconds as the engine takes it).
 * - shutdown, or the events ending, while the task runs: as a kill, with REASON_EXECUTOR_TERMINATED.
 *
 * Every container it creates is removed when its task ends, when `run` is interrupted and when
 * the executor shuts down: nothing outlives it, unless the task is checkpointed with
 * `onInterrupt: "leave"` (the default with `checkpoint`), which leaves its container running for a
 * later `recover`.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { v1 } from "@berth/proto"
 * import { DockerExecutor, ExecutorSession } from "@berth/sdk-executor"
 *
 * const program = Effect.gen(function*() {
 *   const inProcess = yield* ExecutorSession.makeInProcess({
 *     frameworkId: "f1", executorId: "web-1", agentId: "a1",
 *     onUpdate: (status) => Effect.log(v1.TaskState[status.state])
 *   })
 *   yield* DockerExecutor.run({ sandbox: "/var/lib/berth/sandboxes/web-1" }).pipe(
 *     Effect.provide(ExecutorSession.layerInProcess(inProcess)),
 *     Effect.forkScoped
 *   )
 *   yield* inProcess.send({
 *     $case: "launch",
 *     value: {
 *       task: v1.TaskInfo.create({
 *         taskId: "web-1",
 *         command: { shell: true, value: "exec ./server --port 8080" },
 *         container: {
 *           type: v1.ContainerInfo_Type.DOCKER,
 *           docker: {
 *             image: "my-server:1.0",
 *             network: v1.ContainerInfo_DockerInfo_Network.BRIDGE,
 *             portMappings: [{ hostPort: 31000, containerPort: 8080, protocol: "tcp" }]
 *           }
 *         }
 *       })
 *     }
 *   })
 * })
 * ```
 *
 * @since 0.1.0
 * @category running
 */
export const run: (options: RunOptions) => Effect.Effect<void, never, ExecutorSession> = internal.run

/**
 * Removes every container (running or not) that the Docker executor made for one executor of a
 * framework, or for a whole framework or agent, found by their labels (at least one must be
 * given); for an agent that starts clean instead of re-attaching (`berth agent --recover=cleanup`),
 * or a test cluster removing what its agents left.
 *
 * @example
 * ```ts
 * import { DockerExecutor } from "@berth/sdk-executor"
 *
 * const cleanup = DockerExecutor.removeContainers({ frameworkId: "f1", executorId: "web-1" })
 * ```
 *
 * @since 0.1.0
 * @category containers
 */
export const removeContainers = (
  of: { readonly frameworkId?: string | undefined; readonly executorId?: string | undefined; readonly agentId?: string | undefined },
  docker?: Connection
): Effect.Effect<void, DockerEngineError> =>
  Effect.gen(function*() {
    const connected = yield* engine.connect(docker)
    const labels: Record<string, string> = {}
    if (of.frameworkId !== undefined) labels[task.labelKeys.frameworkId] = of.frameworkId
    if (of.executorId !== undefined) labels[task.labelKeys.executorId] = of.executorId
    if (of.agentId !== undefined) labels[task.labelKeys.agentId] = of.agentId
    // Never everything: at least one of the three narrows the list to Berth's own containers.
    if (Object.keys(labels).length === 0) return
    const ids = yield* connected.list(labels)
    yield* Effect.forEach(ids, (id) => connected.remove(id), { discard: true })
  })
