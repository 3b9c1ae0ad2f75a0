import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { afterAll, describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Fiber } from "effect"
import { TaskStates, v1 } from "@berth/proto"
import { DockerExecutor, ExecutorSession } from "@berth/sdk-executor"
import { docker, engineProblem, IMAGE, optedOut } from "./dockerSupport.ts"

const { ContainerInfo_Type, ContainerInfo_DockerInfo_Network: Network, TaskState, TaskStatus_Reason: Reason, Volume_Mode } = v1

const container = (
  docker: Partial<v1.ContainerInfo_DockerInfo> = {},
  rest: Partial<v1.ContainerInfo> = {}
): v1.ContainerInfo =>
  v1.ContainerInfo.create({
    type: ContainerInfo_Type.DOCKER,
    docker: v1.ContainerInfo_DockerInfo.create({ image: IMAGE, ...docker }),
    ...rest
  })

describe("DockerExecutor.containerProblem", () => {
  it.each([
    "berth-base:bookworm",
    "debian",
    "localhost:5000/team/app:1.2.3",
    "registry.example.org/a/b/c",
    `app@sha256:${"a".repeat(64)}`,
    `sha256:${"0123456789abcdef".repeat(4)}`
  ])("accepts the image reference %s", (image) => {
    expect(DockerExecutor.containerProblem(container({ image }))).toBeUndefined()
  })

  it.each(["Upper/Case", "-flag", "a b", "app:", "app::1"])("rejects the image reference %s", (image) => {
    expect(DockerExecutor.containerProblem(container({ image }))?.field).toBe("docker.image")
  })

  it("accepts a complete, valid container", () => {
    expect(DockerExecutor.containerProblem(container({
      network: Network.USER,
      networkName: "backend",
      portMappings: [
        { hostPort: 31000, containerPort: 80, protocol: "tcp" },
        { hostPort: 31000, containerPort: 53, protocol: "udp" }
      ],
      labels: { labels: [{ key: "team", value: "a" }, { key: "com.example/tier", value: "web" }] }
    }, {
      hostname: "web-1.internal",
      volumes: [
        { containerPath: "/data", hostPath: "/srv/data", mode: Volume_Mode.RO },
        { containerPath: "/cache/", hostPath: "cache", mode: Volume_Mode.UNSPECIFIED }
      ],
      rlimits: [{ type: "RLIMIT_NOFILE", soft: 1024, hard: 4096 }, { type: "RLIMIT_CORE" }]
    }))).toBeUndefined()
  })

  const bad: Array<[string, v1.ContainerInfo, string, RegExp]> = [
    ["no docker info", v1.ContainerInfo.create({ type: ContainerInfo_Type.DOCKER }), "docker", /required/],
    ["no image", container({ image: "" }), "docker.image", /required/],
    ["force pull", container({ forcePullImage: true }), "docker.forcePullImage", /pulling Docker images/],
    ["an unknown network", container({ network: 7 as v1.ContainerInfo_DockerInfo_Network }), "docker.network", /HOST, BRIDGE/],
    ["USER without a name", container({ network: Network.USER }), "docker.networkName", /required/],
    ["USER named bridge", container({ network: Network.USER, networkName: "bridge" }), "docker.networkName", /user-defined/],
    ["a name without USER", container({ network: Network.BRIDGE, networkName: "x" }), "docker.networkName", /unless network is USER/],
    [
      "ports on the host network",
      container({ network: Network.HOST, portMappings: [{ hostPort: 1, containerPort: 1, protocol: "" }] }),
      "docker.portMappings",
      /BRIDGE or USER/
    ],
    [
      "ports with no network",
      container({ network: Network.NONE, portMappings: [{ hostPort: 1, containerPort: 1, protocol: "" }] }),
      "docker.portMappings",
      /BRIDGE or USER/
    ],
    ["host port 0", container({ portMappings: [{ hostPort: 0, containerPort: 1, protocol: "" }] }), "docker.portMappings[0].hostPort", /1\.\.65535/],
    [
      "container port 65536",
      container({ portMappings: [{ hostPort: 1, containerPort: 65536, protocol: "" }] }),
      "docker.portMappings[0].containerPort",
      /1\.\.65535/
    ],
    ["protocol TCP", container({ portMappings: [{ hostPort: 1, containerPort: 1, protocol: "TCP" }] }), "docker.portMappings[0].protocol", /"tcp"/],
    [
      "one host port twice",
      container({
        portMappings: [{ hostPort: 5, containerPort: 1, protocol: "" }, { hostPort: 5, containerPort: 2, protocol: "tcp" }]
      }),
      "docker.portMappings[1].hostPort",
      /5\/tcp is mapped twice/
    ],
    ["a reserved label", container({ labels: { labels: [{ key: "berth.agent-id", value: "x" }] } }), "docker.labels.labels[0].key", /reserved/],
    [
      "a label twice",
      container({ labels: { labels: [{ key: "a", value: "1" }, { key: "a", value: "2" }] } }),
      "docker.labels.labels[1].key",
      /twice/
    ],
    ["a relative container path", container({}, { volumes: [{ containerPath: "data", hostPath: "/x", mode: 1 }] }), "volumes[0].containerPath", /absolute/],
    ["a container path with ..", container({}, { volumes: [{ containerPath: "/a/../b", hostPath: "/x", mode: 1 }] }), "volumes[0].containerPath", /\.\./],
    ["the container root", container({}, { volumes: [{ containerPath: "/", hostPath: "/x", mode: 1 }] }), "volumes[0].containerPath", /root/],
    [
      "the sandbox mount point",
      container({}, { volumes: [{ containerPath: "/mnt/sandbox/", hostPath: "/x", mode: 1 }] }),
      "volumes[0].containerPath",
      /\/mnt\/sandbox/
    ],
    [
      "one container path twice",
      container({}, { volumes: [{ containerPath: "/d", hostPath: "/x", mode: 1 }, { containerPath: "/d/", hostPath: "/y", mode: 2 }] }),
      "volumes[1].containerPath",
      /twice/
    ],
    ["no host path", container({}, { volumes: [{ containerPath: "/d", hostPath: "", mode: 1 }] }), "volumes[0].hostPath", /required/],
    ["a host path with ..", container({}, { volumes: [{ containerPath: "/d", hostPath: "../../etc", mode: 1 }] }), "volumes[0].hostPath", /\.\./],
    ["an unknown mode", container({}, { volumes: [{ containerPath: "/d", hostPath: "/x", mode: 5 as v1.Volume_Mode }] }), "volumes[0].mode", /RW or RO/],
    ["a bad hostname", container({}, { hostname: "under_score" }), "hostname", /RFC 1123/],
    ["a hostname on the host network", container({ network: Network.HOST }, { hostname: "h" }), "hostname", /HOST network/],
    ["an unknown rlimit", container({}, { rlimits: [{ type: "RLIMIT_BOGUS" }] }), "rlimits[0].type", /RLIMIT_NOFILE/],
    ["soft above hard", container({}, { rlimits: [{ type: "RLIMIT_NOFILE", soft: 10, hard: 5 }] }), "rlimits[0].soft", /<= hard/]
  ]
  it.each(bad)("rejects %s, naming the field", (_, info, field, rule) => {
    const problem = DockerExecutor.containerProblem(info)
    expect(problem?.field).toBe(field)
    expect(problem?.rule).toMatch(rule)
  })
})

describe("DockerExecutor.taskProblem", () => {
  const task = (command: Partial<v1.CommandInfo> | undefined, extra: Partial<v1.TaskInfo> = {}) =>
    v1.TaskInfo.create({
      taskId: "t",
      ...(command === undefined ? {} : { command: v1.CommandInfo.create(command) }),
      container: container(),
      ...extra
    })

  it("accepts a shell command, an argv, and an empty argv (the image's own entrypoint and command)", () => {
    expect(DockerExecutor.taskProblem(task({ shell: true, value: "echo hi" }))).toBeUndefined()
    expect(DockerExecutor.taskProblem(task({ shell: false, value: "/bin/echo", arguments: ["echo", "hi"] }))).toBeUndefined()
    expect(DockerExecutor.taskProblem(task({ shell: false, value: "" }))).toBeUndefined()
  })

  it.each<[string, v1.TaskInfo, string, boolean]>([
    ["no command", task(undefined), "command", false],
    ["an empty shell command", task({ shell: true, value: " " }), "command.value", false],
    ["a bad variable name", task({ shell: true, value: "x", environment: [{ name: "1X", value: "" }] }), "command.environment[0].name", false],
    ["artifact URIs", task({ shell: true, value: "x", uris: [{ value: "file:///x" } as v1.CommandUri] }), "command.uris", true],
    ["a user", task({ shell: true, value: "x", user: "nobody" }), "command.user", true],
    ["a health check", task({ shell: true, value: "x" }, { healthCheck: v1.HealthCheck.create({ type: 3 }) }), "healthCheck", true],
    ["a readiness check", task({ shell: true, value: "x" }, { check: v1.HealthCheck.create({ type: 3 }) }), "check", true],
    ["a bad container", task({ shell: true, value: "x" }, { container: container({ image: "" }) }), "container.docker.image", false]
  ])("rejects %s", (_, info, field, unsupported) => {
    const problem = DockerExecutor.taskProblem(info)
    expect(problem?.field).toBe(field)
    expect(problem?.unsupported === true).toBe(unsupported)
  })
})

// --- Against the real engine -------------------------------------------------------------------


/** Containers made by this file's executors (their executor ids all start with "unit-"). */
const ours = (executorId: string): Array<string> =>
  docker("ps", "-a", "--filter", `label=berth.executor-id=${executorId}`, "--format", "{{.ID}}").split("\n").filter((s) => s !== "")

/** Real-time wait for `predicate`, bounded, so a broken behaviour fails instead of hanging. */
const waitFor = (what: string, predicate: () => boolean, ms = 15_000) =>
  Effect.gen(function*() {
    const deadline = performance.now() + ms
    while (!predicate()) {
      if (performance.now() > deadline) return yield* Effect.die(new Error(`timed out waiting for ${what}`))
      yield* Effect.promise(() => new Promise((resolve) => setTimeout(resolve, 20)))
    }
  })

/** A Docker executor on an in-process session with a fresh sandbox, and every status it reports. */
const startExecutor = (executorId: string) =>
  Effect.gen(function*() {
    const sandbox = yield* Effect.acquireRelease(
      Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "berth-docker-executor-"))),
      (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
    )
    const statuses: Array<v1.TaskStatus> = []
    const inProcess = yield* ExecutorSession.makeInProcess({
      frameworkId: "fw-unit",
      executorId,
      agentId: "agent-unit",
      onUpdate: (status) => Effect.sync(() => void statuses.push(status))
    })
    const fiber = yield* DockerExecutor.run({ sandbox, defaultGracePeriodSeconds: 1 }).pipe(
      Effect.provide(ExecutorSession.layerInProcess(inProcess)),
      Effect.forkScoped
    )
    const launch = (info: v1.TaskInfo) => inProcess.send({ $case: "launch", value: { task: info } })
    const states = () => statuses.map((s) => TaskStates.name(s.state))
    return { sandbox, statuses, states, inProcess, fiber, launch }
  })

const sleeper = (taskId: string) =>
  v1.TaskInfo.create({ taskId, command: { shell: true, value: "exec sleep 600" }, container: container() })

describe.skipIf(optedOut)("DockerExecutor.run against the Docker engine", () => {
  if (engineProblem !== undefined) {
    it("has a Docker engine and the base image", () => {
      throw new Error(
        `No Docker engine with ${IMAGE}: ${engineProblem}. Run 'bash scripts/ci/docker.sh' as root ` +
          "(outside CI, BERTH_SKIP_DOCKER_TESTS=1 skips this suite with a warning)."
      )
    })
    return
  }

  afterAll(() => {
    expect(["unit-shutdown", "unit-ended", "unit-interrupt", "unit-bad-mount", "unit-persistent", "unit-socket"].flatMap(ours)).toEqual([])
  })

  it.live("a shutdown stops the running container: KILLING, KILLED with REASON_EXECUTOR_TERMINATED, container removed", () =>
    Effect.gen(function*() {
      const executor = yield* startExecutor("unit-shutdown")
      yield* executor.launch(sleeper("s1"))
      yield* waitFor("RUNNING", () => executor.states().includes("RUNNING"))
      expect(ours("unit-shutdown")).toHaveLength(1)
      yield* executor.inProcess.send({ $case: "shutdown", value: { gracePeriodSeconds: 5 } })
      expect(Exit.isSuccess(yield* Fiber.await(executor.fiber))).toBe(true)
      expect(executor.states()).toEqual(["STARTING", "RUNNING", "KILLING", "KILLED"])
      expect(executor.statuses.at(-1)!.reason).toBe(Reason.EXECUTOR_TERMINATED)
      expect(ours("unit-shutdown")).toEqual([])
    }))

  it.live("the agent ending the session stops the container as a shutdown does", () =>
    Effect.gen(function*() {
      const executor = yield* startExecutor("unit-ended")
      yield* executor.launch(sleeper("s2"))
      yield* waitFor("RUNNING", () => executor.states().includes("RUNNING"))
      yield* executor.inProcess.end
      yield* Fiber.await(executor.fiber)
      expect(executor.states().slice(-2)).toEqual(["KILLING", "KILLED"])
      expect(ours("unit-ended")).toEqual([])
    }))

  it.live("interrupting run removes its container at once", () =>
    Effect.gen(function*() {
      const executor = yield* startExecutor("unit-interrupt")
      yield* executor.launch(sleeper("s3"))
      yield* waitFor("RUNNING", () => executor.states().includes("RUNNING"))
      yield* Fiber.interrupt(executor.fiber)
      expect(ours("unit-interrupt")).toEqual([])
    }))

  it.live("a container the engine creates but cannot start is FAILED with REASON_CONTAINER_LAUNCH_FAILED and removed", () =>
    Effect.gen(function*() {
      const executor = yield* startExecutor("unit-bad-mount")
      // A directory cannot be mounted over the image's /bin/sh (a file): the start fails, after the create.
      const info = v1.TaskInfo.create({
        taskId: "s4",
        command: { shell: true, value: "true" },
        container: container({}, { volumes: [{ containerPath: "/bin/sh", hostPath: "dir", mode: Volume_Mode.RW }] })
      })
      yield* executor.launch(info)
      yield* Fiber.await(executor.fiber)
      expect(executor.states()).toEqual(["STARTING", "FAILED"])
      const failed = executor.statuses.at(-1)!
      expect(failed.reason).toBe(Reason.CONTAINER_LAUNCH_FAILED)
      expect(failed.message).toMatch(/^Docker engine: start container: /)
      expect(ours("unit-bad-mount")).toEqual([])
      // The sandbox still has its output files.
      expect(fs.readdirSync(executor.sandbox).sort()).toEqual(["dir", "stderr", "stdout"])
    }))

  it.live("mounts a persistent volume the agent linked into the sandbox, so the link works in the container", () =>
    Effect.gen(function*() {
      const executor = yield* startExecutor("unit-persistent")
      const volume = yield* Effect.acquireRelease(
        Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "berth-persistent-"))),
        (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
      )
      fs.writeFileSync(path.join(volume, "before"), "kept\n")
      // What the agent does for a task with a persistent volume at container path "data".
      fs.symlinkSync(volume, path.join(executor.sandbox, "data"))
      yield* executor.launch(v1.TaskInfo.create({
        taskId: "s6",
        resources: [v1.Resource.create({
          name: "disk",
          value: { $case: "scalar", value: 16 },
          disk: { persistence: { id: "p1", principal: "" }, volume: { containerPath: "data", hostPath: "", mode: Volume_Mode.RW } }
        })],
        command: { shell: true, value: "cat data/before && echo written > /mnt/sandbox/data/after" },
        container: container()
      }))
      yield* Fiber.await(executor.fiber)
      expect(executor.states()).toEqual(["STARTING", "RUNNING", "FINISHED"])
      expect(fs.readFileSync(path.join(executor.sandbox, "stdout"), "utf8")).toBe("kept\n")
      expect(fs.readFileSync(path.join(volume, "after"), "utf8")).toBe("written\n")
    }))

  it.live("refuses to hand a task the Docker engine's socket", () =>
    Effect.gen(function*() {
      const executor = yield* startExecutor("unit-socket")
      yield* executor.launch(v1.TaskInfo.create({
        taskId: "s5",
        command: { shell: true, value: "true" },
        container: container({}, { volumes: [{ containerPath: "/host-run", hostPath: "/var/run", mode: Volume_Mode.RO }] })
      }))
      yield* Fiber.await(executor.fiber)
      expect(executor.states()).toEqual(["STARTING", "FAILED"])
      expect(executor.statuses.at(-1)!.message).toMatch(/would expose the Docker engine's socket/)
      expect(ours("unit-socket")).toEqual([])
    }))
})
