/**
 * The Docker containerizer against a real Docker engine and the locally built image
 * berth-base:bookworm (scripts/ci/docker.sh provides both; no image registry is reachable).
 * Without an engine this suite fails, loudly: CI makes container suites mandatory. Outside CI a
 * developer without root can opt out with BERTH_SKIP_DOCKER_TESTS=1, which skips it with a warning.
 */
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { Resources, TaskStates, v1 } from "@berth/proto"
import { TestCluster } from "@berth/testkit"
import { Clock, Effect, Schedule } from "effect"
import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import * as Framework from "./support/framework.ts"

const IMAGE = process.env.BERTH_DOCKER_IMAGE ?? "berth-base:bookworm"
const { ContainerInfo_Type, ContainerInfo_DockerInfo_Network: Network, TaskState, TaskStatus_Reason: Reason, Volume_Mode } = v1

const docker = (...args: Array<string>): string =>
  execFileSync("docker", args, { encoding: "utf8", timeout: 30_000, stdio: ["ignore", "pipe", "pipe"] }).trim()

/** Why the suite cannot run on this machine, or undefined when it can. */
const unavailable = (): string | undefined => {
  try {
    docker("info", "--format", "{{.ServerVersion}}")
  } catch (error) {
    const detail = (error as { stderr?: string }).stderr?.trim() || (error as Error).message
    return `no Docker engine answers 'docker info' (${detail.split("\n")[0]})`
  }
  try {
    docker("image", "inspect", "--format", "{{.Id}}", IMAGE)
  } catch {
    return `the Docker engine has no image ${IMAGE}`
  }
  return undefined
}

/** Ids of the containers (running or not) that carry `label` ("key" or "key=value"). */
const containers = (label: string): Array<string> =>
  docker("ps", "-a", "--filter", `label=${label}`, "--format", "{{.ID}}").split("\n").filter((id) => id !== "")

const taskContainers = (taskId: string) => containers(`berth.task-id=${taskId}`)

const dockerTask = (
  taskId: string,
  command: Partial<v1.CommandInfo>,
  container: { docker?: Partial<v1.ContainerInfo_DockerInfo>; volumes?: Array<v1.Volume>; rlimits?: Array<v1.RLimit> } = {},
  extra: Partial<v1.TaskInfo> = {}
): v1.TaskInfo =>
  v1.TaskInfo.create({
    name: taskId,
    taskId,
    resources: [Resources.scalar("cpus", 0.1), Resources.scalar("mem", 64)],
    command: { shell: true, ...command },
    container: {
      type: ContainerInfo_Type.DOCKER,
      docker: v1.ContainerInfo_DockerInfo.create({ image: IMAGE, ...container.docker }),
      volumes: container.volumes ?? [],
      rlimits: container.rlimits ?? []
    },
    ...extra
  })

/** The sandbox of the latest run of a task, on whichever agent ran it. */
const sandboxOf = (cluster: TestCluster.TestCluster, frameworkId: string, taskId: string): string => {
  for (const agent of cluster.agents) {
    const dir = path.join(agent.workDir, "frameworks", frameworkId, "executors", taskId, "runs", "latest")
    if (fs.existsSync(dir)) return dir
  }
  throw new Error(`no sandbox for ${taskId}`)
}

const statesOf = (framework: Framework.TestFramework, taskId: string) =>
  framework.updates.filter((s) => s.taskId === taskId).map((s) => TaskStates.name(s.state))

/** Launches `tasks` on the next offer. */
const launch = (framework: Framework.TestFramework, tasks: Array<v1.TaskInfo>) =>
  Effect.gen(function*() {
    const offer = yield* framework.nextOffer
    const response = yield* framework.session.accept([offer.offerId], [Framework.launch(tasks)])
    expect(response.launchedTaskIds).toEqual(tasks.map((t) => t.taskId))
  })

/** A port in the agents' default range (31000-31999) that nothing on this machine listens on. */
const freePort = Effect.promise(async () => {
  for (let port = 31000 + Math.floor(Math.random() * 900); port < 32000; port++) {
    const free = await new Promise<boolean>((resolve) => {
      const server = net.createServer()
      server.once("error", () => resolve(false))
      server.listen(port, "127.0.0.1", () => server.close(() => resolve(true)))
    })
    if (free) return port
  }
  throw new Error("no free port in 31000-31999")
})

/** Everything a TCP server at 127.0.0.1:`port` sends before it closes the connection. */
const readAll = (port: number) =>
  Effect.callback<string, Error>((resume) => {
    const socket = net.connect(port, "127.0.0.1")
    let data = ""
    socket.setEncoding("utf8")
    socket.on("data", (chunk: string) => (data += chunk))
    socket.on("end", () => resume(Effect.succeed(data)))
    socket.on("error", (error) => resume(Effect.fail(error)))
    return Effect.sync(() => socket.destroy())
  })

const problem = unavailable()
const optedOut = problem !== undefined && process.env.BERTH_SKIP_DOCKER_TESTS === "1" && process.env.CI !== "true"

if (problem !== undefined && optedOut) {
  console.warn(`\n!!! SKIPPING the Docker containerizer suite: ${problem} (BERTH_SKIP_DOCKER_TESTS=1). CI runs it.\n`)
}

describe.skipIf(optedOut)("the Docker containerizer on a real Docker engine", () => {
  if (problem !== undefined) {
    it("has a Docker engine and the base image", () => {
      throw new Error(
        `The Docker suite cannot run: ${problem}. Run 'bash scripts/ci/docker.sh' as root: it installs docker.io ` +
          `and debootstrap, starts dockerd and builds ${IMAGE} from the machine's Debian mirror. ` +
          "(Outside CI, BERTH_SKIP_DOCKER_TESTS=1 skips this suite with a warning.)"
      )
    })
    return
  }

  beforeAll(() => {
    // Leftovers of an earlier run that was itself killed would make the leak check below lie.
    const stale = containers("berth.task-id")
    if (stale.length > 0) {
      console.warn(`removing ${stale.length} containers left by an earlier run: ${stale.join(" ")}`)
      docker("rm", "-f", ...stale)
    }
  })

  afterAll(() => {
    // Every container the executor made is gone: after each task, on kill and on agent stop.
    expect(containers("berth.task-id")).toEqual([])
  })

  it.live("runs a shell command in a container: output, environment, working dir, volumes, rlimits in place", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ agents: 1 })
      const framework = yield* Framework.open(cluster.master)
      const hostDir = fs.mkdtempSync(path.join(os.tmpdir(), "berth-docker-volumes-"))
      yield* Effect.addFinalizer(() => Effect.sync(() => fs.rmSync(hostDir, { recursive: true, force: true })))
      fs.mkdirSync(path.join(hostDir, "ro"))
      fs.mkdirSync(path.join(hostDir, "rw"))
      fs.writeFileSync(path.join(hostDir, "ro", "config"), "from the host\n")
      const task = dockerTask("echo", {
        environment: [{ name: "GREETING", value: "hi there" }],
        value: [
          "echo \"hello from $BERTH_TASK_ID on $BERTH_AGENT_ID\"",
          "echo 'to stderr' >&2",
          "pwd",
          "echo \"$GREETING|$BERTH_SANDBOX|$BERTH_FRAMEWORK_ID|$BERTH_EXECUTOR_ID\"",
          "cat /etc/debian_version > /dev/null && echo debian",
          "cat /config/config",
          "(echo nope > /config/new) 2>/dev/null && echo ro-writable || echo ro-refused",
          "echo 'written in the container' > /out/result",
          "echo 'in the sandbox' > /scratch/note",
          "ulimit -n"
        ].join("; ")
      }, {
        volumes: [
          { containerPath: "/config", hostPath: path.join(hostDir, "ro"), mode: Volume_Mode.RO },
          { containerPath: "/out", hostPath: path.join(hostDir, "rw"), mode: Volume_Mode.RW },
          { containerPath: "/scratch", hostPath: "scratch", mode: Volume_Mode.RW }
        ],
        rlimits: [{ type: "RLIMIT_NOFILE", soft: 512, hard: 1024 }]
      })
      yield* launch(framework, [task])
      const finished = yield* framework.awaitState("echo", TaskState.FINISHED)
      expect(statesOf(framework, "echo")).toEqual(["STAGING", "STARTING", "RUNNING", "FINISHED"])
      expect(finished.exitCode).toBe(0)
      const sandbox = sandboxOf(cluster, framework.frameworkId, "echo")
      expect(fs.readFileSync(path.join(sandbox, "stdout"), "utf8")).toBe([
        `hello from echo on ${finished.agentId}`,
        "/mnt/sandbox",
        `hi there|/mnt/sandbox|${framework.frameworkId}|echo`,
        "debian",
        "from the host",
        "ro-refused",
        "512",
        ""
      ].join("\n"))
      expect(fs.readFileSync(path.join(sandbox, "stderr"), "utf8")).toBe("to stderr\n")
      expect(fs.readFileSync(path.join(hostDir, "rw", "result"), "utf8")).toBe("written in the container\n")
      // A relative host path is a directory of the sandbox, made for the task.
      expect(fs.readFileSync(path.join(sandbox, "scratch", "note"), "utf8")).toBe("in the sandbox\n")
      expect(fs.existsSync(path.join(hostDir, "ro", "new"))).toBe(false)
      expect(taskContainers("echo")).toEqual([])
    }))

  it.live("reports a container that exits 3 as FAILED with exit code 3", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ agents: 1 })
      const framework = yield* Framework.open(cluster.master)
      // An argv task: `value` is the executable, arguments[0] its argv[0].
      yield* launch(framework, [dockerTask("exit-3", { shell: false, value: "/bin/sh", arguments: ["sh", "-c", "exit 3"] })])
      const failed = yield* framework.awaitState("exit-3", TaskState.FAILED)
      expect(failed.exitCode).toBe(3)
      expect(failed.reason).toBe(Reason.COMMAND_EXECUTOR_FAILED)
      expect(failed.message).toBe("Container exited with status 3")
      expect(statesOf(framework, "exit-3")).toEqual(["STAGING", "STARTING", "RUNNING", "FAILED"])
      expect(taskContainers("exit-3")).toEqual([])
    }))

  it.live("publishes a port mapping on 127.0.0.1: a server in the container answers; SIGTERM stops it long before its grace", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ agents: 1 })
      const framework = yield* Framework.open(cluster.master)
      const hostPort = yield* freePort
      // Debian's minbase image has no HTTP server, but perl-base (always there: dpkg needs it)
      // has IO::Socket::INET, enough for a TCP server that greets and hangs up.
      const server =
        "exec perl -MIO::Socket::INET -e '$s = IO::Socket::INET->new(LocalAddr => \"0.0.0.0\", LocalPort => 8080, " +
        "Listen => 5, ReuseAddr => 1) or die \"listen: $!\"; print \"listening\\n\"; $| = 1; " +
        "while ($c = $s->accept) { print $c \"hello from $ENV{BERTH_TASK_ID}\\n\"; close $c }'"
      const task = dockerTask("server", { value: server }, {
        docker: {
          network: Network.BRIDGE,
          portMappings: [{ hostPort, containerPort: 8080, protocol: "tcp" }],
          labels: { labels: [{ key: "team", value: "storage" }] }
        }
      }, {
        resources: [Resources.scalar("cpus", 0.1), Resources.scalar("mem", 64), Resources.ranges("ports", [[hostPort, hostPort]])],
        killPolicy: { gracePeriodSeconds: 30 }
      })
      yield* launch(framework, [task])
      yield* framework.awaitState("server", TaskState.RUNNING)

      const [id] = taskContainers("server")
      expect(id).toBeDefined()
      expect(JSON.parse(docker("inspect", "--format", "{{json .HostConfig.PortBindings}}", id!))).toEqual({
        "8080/tcp": [{ HostIp: "127.0.0.1", HostPort: String(hostPort) }]
      })
      expect(JSON.parse(docker("inspect", "--format", "{{json .Config.Labels}}", id!))).toEqual({
        "berth.task-id": "server",
        "berth.framework-id": framework.frameworkId,
        "berth.executor-id": "server",
        "berth.agent-id": cluster.agents[0]!.agentId,
        "team": "storage"
      })
      // The engine's proxy accepts (and drops) connections until the server in the container listens.
      const greeting = yield* readAll(hostPort).pipe(
        Effect.filterOrFail((data) => data !== "", () => new Error("no greeting yet")),
        Effect.retry(Schedule.spaced("100 millis")),
        Effect.timeout("15 seconds")
      )
      expect(greeting).toBe("hello from server\n")

      const killedAt = yield* Clock.currentTimeMillis
      yield* framework.session.kill("server")
      const killed = yield* framework.awaitState("server", TaskState.KILLED)
      expect((yield* Clock.currentTimeMillis) - killedAt).toBeLessThan(5_000)
      expect(killed.message).toMatch(/SIGTERM/)
      expect(statesOf(framework, "server")).toEqual(["STAGING", "STARTING", "RUNNING", "KILLING", "KILLED"])
      expect(taskContainers("server")).toEqual([])
    }))

  it.live("kills a container that ignores SIGTERM: KILLED and removed within its grace period plus one second", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ agents: 1 })
      const framework = yield* Framework.open(cluster.master)
      yield* launch(framework, [
        dockerTask("stubborn", { value: "trap '' TERM; echo started; while :; do sleep 0.1; done" }, {}, {
          killPolicy: { gracePeriodSeconds: 1 }
        })
      ])
      yield* framework.awaitState("stubborn", TaskState.RUNNING)
      const sandbox = sandboxOf(cluster, framework.frameworkId, "stubborn")
      while (!fs.readFileSync(path.join(sandbox, "stdout"), "utf8").includes("started")) yield* Effect.sleep("20 millis")
      expect(taskContainers("stubborn")).toHaveLength(1)

      const killedAt = yield* Clock.currentTimeMillis
      yield* framework.session.kill("stubborn")
      yield* framework.awaitState("stubborn", TaskState.KILLING)
      const killed = yield* framework.awaitState("stubborn", TaskState.KILLED)
      const elapsed = (yield* Clock.currentTimeMillis) - killedAt
      // Only the SIGKILL after the 1 s grace period could end it, and the container is gone by then.
      expect(taskContainers("stubborn")).toEqual([])
      expect(elapsed).toBeGreaterThanOrEqual(1000)
      expect(elapsed).toBeLessThanOrEqual(2000)
      expect(killed.message).toMatch(/SIGKILL/)
      expect(killed.reason).toBe(Reason.KILLED_BY_SCHEDULER)
    }))

  it.live("fails a task whose image is not on the engine, naming the image, and never pulls", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ agents: 1 })
      const framework = yield* Framework.open(cluster.master)
      const image = "berth-test/no-such-image:never"
      yield* launch(framework, [dockerTask("no-image", { value: "true" }, { docker: { image } })])
      const failed = yield* framework.awaitState("no-image", TaskState.FAILED)
      expect(failed.reason).toBe(Reason.CONTAINER_LAUNCH_FAILED)
      expect(failed.message).toContain(`"${image}" is not present on this agent's Docker engine`)
      expect(failed.message).toMatch(/never pull/)
      expect(statesOf(framework, "no-image")).toEqual(["STAGING", "STARTING", "FAILED"])
      expect(taskContainers("no-image")).toEqual([])
      expect(() => docker("image", "inspect", image)).toThrow()
    }))

  it.live("rejects bad Docker fields at Accept, naming the field, and launches nothing", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ agents: 1 })
      const framework = yield* Framework.open(cluster.master)
      const offer = yield* framework.nextOffer
      const ports = [Resources.scalar("cpus", 0.1), Resources.ranges("ports", [[31000, 31000]])]
      const cases: Array<[v1.TaskInfo, string, RegExp]> = [
        [dockerTask("t", { value: "true" }, { docker: { image: "" } }), "container.docker.image", /is required/],
        [
          dockerTask("t", { value: "true" }, { docker: { portMappings: [{ hostPort: 31001, containerPort: 80, protocol: "tcp" }] } }, {
            resources: ports
          }),
          "container.docker.portMappings[0].hostPort",
          /31001 must be among the task's ports resources \(31000\)/
        ],
        [
          dockerTask("t", { value: "true" }, { docker: { portMappings: [{ hostPort: 31000, containerPort: 70000, protocol: "tcp" }] } }, {
            resources: ports
          }),
          "container.docker.portMappings[0].containerPort",
          /1\.\.65535/
        ],
        [
          dockerTask("t", { value: "true" }, { docker: { portMappings: [{ hostPort: 31000, containerPort: 80, protocol: "sctp" }] } }, {
            resources: ports
          }),
          "container.docker.portMappings[0].protocol",
          /"tcp".*"udp"/
        ],
        [
          dockerTask("t", { value: "true" }, { docker: { network: Network.HOST, portMappings: [{ hostPort: 31000, containerPort: 80, protocol: "" }] } }, {
            resources: ports
          }),
          "container.docker.portMappings",
          /BRIDGE or USER network/
        ],
        [dockerTask("t", { value: "true" }, { docker: { network: Network.USER } }), "container.docker.networkName", /is required/],
        [dockerTask("t", { value: "true" }, { docker: { network: 9 as v1.ContainerInfo_DockerInfo_Network } }), "container.docker.network", /HOST, BRIDGE, NONE or USER/],
        [
          dockerTask("t", { value: "true" }, { volumes: [{ containerPath: "data", hostPath: "/tmp", mode: Volume_Mode.RW }] }),
          "container.volumes[0].containerPath",
          /absolute/
        ],
        [
          dockerTask("t", { value: "true" }, { volumes: [{ containerPath: "/data/../etc", hostPath: "/tmp", mode: Volume_Mode.RW }] }),
          "container.volumes[0].containerPath",
          /\.\./
        ],
        [
          dockerTask("t", { value: "true" }, { docker: { labels: { labels: [{ key: "berth.task-id", value: "other" }] } } }),
          "container.docker.labels.labels[0].key",
          /reserved/
        ],
        [dockerTask("t", { value: "" }), "command.value", /non-empty shell command/]
      ]
      for (const [task, field, rule] of cases) {
        const error = yield* framework.session.accept([offer.offerId], [Framework.launch([task])]).pipe(Effect.flip)
        expect(error._tag, field).toBe("InvalidArgument")
        if (error._tag !== "InvalidArgument") continue
        expect(error.field, field).toBe(`operations[0].launch.taskInfos[0].${field}`)
        expect(error.rule, field).toMatch(rule)
      }
      // Pulling is refused as a feature this cluster does not serve.
      const pull = yield* framework.session
        .accept([offer.offerId], [Framework.launch([dockerTask("t", { value: "true" }, { docker: { forcePullImage: true } })])])
        .pipe(Effect.flip)
      expect(pull.message).toMatch(/container\.docker\.forcePullImage: pulling Docker images/)
      expect((yield* cluster.operator.state).tasks).toEqual([])
    }))

  it.live("removes the container of a running task when its agent stops", () =>
    Effect.gen(function*() {
      yield* Effect.scoped(Effect.gen(function*() {
        const cluster = yield* TestCluster.make({ agents: 1 })
        const framework = yield* Framework.open(cluster.master)
        yield* launch(framework, [dockerTask("orphan", { value: "exec sleep 600" })])
        yield* framework.awaitState("orphan", TaskState.RUNNING)
        expect(taskContainers("orphan")).toHaveLength(1)
      }))
      // The cluster's scope is closed: the agent interrupted its executors, and they cleaned up.
      expect(taskContainers("orphan")).toEqual([])
    }))
})
