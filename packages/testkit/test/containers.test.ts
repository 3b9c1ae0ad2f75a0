/**
 * The containers backend (issue 7): masters, agents and etcd each a Docker container on a network
 * of the cluster's own, the shared scenario suite (scenarios.ts) run on it, and cleanup: nothing
 * with the testkit's label outlives a cluster, even one whose test failed.
 *
 * Needs a Docker engine and the base image berth-base:bookworm (scripts/ci/docker.sh). In CI
 * (CI=true) or with BERTH_REQUIRE_DOCKER=1 a missing engine fails the suite; elsewhere the suite
 * is skipped with the reason printed.
 */
import { describe, expect, it } from "@effect/vitest"
import { v1 } from "@berth/proto"
import { TestCluster } from "@berth/testkit"
import { Cause, Effect, Exit, Scope } from "effect"
import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import * as Framework from "../../../test/support/framework.ts"
import * as Scenarios from "./scenarios.ts"

const BASE = process.env.BERTH_DOCKER_IMAGE ?? "berth-base:bookworm"

const docker = (...args: Array<string>): string =>
  execFileSync("docker", args, { encoding: "utf8", timeout: 30_000, stdio: ["ignore", "pipe", "pipe"] }).trim()

const unavailable = (): string | undefined => {
  try {
    docker("image", "inspect", "--format", "{{.Id}}", BASE)
    return undefined
  } catch (error) {
    return `no Docker engine with the image ${BASE} (${((error as { stderr?: string }).stderr ?? String(error)).split("\n")[0]})`
  }
}

const required = process.env.CI === "true" || process.env.BERTH_REQUIRE_DOCKER === "1"
const problem = unavailable()
// BERTH_SKIP_DOCKER_TESTS=1 opts out on a laptop, like the other Docker suites; never in CI.
const optedOut = process.env.BERTH_SKIP_DOCKER_TESTS === "1" && !required
const skip = optedOut || (problem !== undefined && !required)
if (skip) {
  process.stderr.write(
    `SKIPPED: the containers backend suite: ${optedOut ? "BERTH_SKIP_DOCKER_TESTS=1" : `${problem}; run scripts/ci/docker.sh to get one`}\n`
  )
}

/** Containers and networks (ids) carrying a cluster's label. */
const leftOf = (workDir: string) => {
  const label = `label=berth.testkit.cluster=${path.basename(workDir)}`
  return {
    containers: docker("ps", "-aq", "--filter", label).split("\n").filter((l) => l !== ""),
    networks: docker("network", "ls", "-q", "--filter", label).split("\n").filter((l) => l !== "")
  }
}

const inContainer = (id: string, ...command: Array<string>) => docker("exec", id, ...command)

describe.skipIf(skip)("TestCluster, containers backend", () => {
  it.live("needs a Docker engine (in CI a missing one fails the suite)", () =>
    Effect.sync(() => {
      expect(problem, `${problem}: run scripts/ci/docker.sh`).toBeUndefined()
    }))

  for (const scenario of Scenarios.all) {
    it.live(scenario.name, () =>
      Effect.gen(function*() {
        const cluster = yield* TestCluster.make({ ...scenario.options, backend: "containers" })
        expect(cluster.backend).toBe("containers")
        yield* scenario.run(cluster)
      }), scenario.timeoutMs)
  }

  it.live("each part is a container of its own on one labelled network; etcd's stop and start are the container's; nothing outlives the cluster", () =>
    Effect.gen(function*() {
      const scope = yield* Effect.acquireRelease(Scope.make(), (scope, exit) => Scope.close(scope, exit))
      const cluster = yield* TestCluster.make({ backend: "containers", agents: 1, agentResources: "cpus:1;mem:256;disk:256" })
        .pipe(Scope.provide(scope))
      const left = leftOf(cluster.workDir)
      // etcd, a master, an agent; one network.
      expect(left.containers).toHaveLength(3)
      expect(left.networks).toHaveLength(1)
      const roles = docker("ps", "--format", '{{.Label "berth.testkit.role"}} {{.Ports}}', "--filter", `label=berth.testkit.cluster=${path.basename(cluster.workDir)}`)
        .split("\n").map((l) => l.trim()).sort()
      // Published on the host's loopback only: etcd and the master; the agent publishes nothing.
      expect(roles).toEqual([
        "agent",
        expect.stringMatching(/^etcd 127\.0\.0\.1:\d+->2379\/tcp$/),
        expect.stringMatching(/^master 127\.0\.0\.1:(\d+)->\1\/tcp$/)
      ])
      expect(cluster.master).toMatch(/^127\.0\.0\.1:\d+$/)
      expect(cluster.etcd?.endpoint).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/)
      // The master's container runs the master on etcd by container name.
      expect(fs.readFileSync(cluster.masters[0]!.logFile!, "utf8")).toContain("berth master listening on")

      // The agent's work dir is the same path inside its container and out.
      const framework = yield* Framework.open(cluster.master, "probe", { failoverTimeoutSeconds: 600 }).pipe(Scope.provide(scope))
      const [taskId] = yield* Scenarios.launchOnEach(framework, [cluster.agents[0]!.agentId], "hostname > where; exec sleep 300")
      yield* framework.awaitState(taskId!, v1.TaskState.RUNNING)
      const where = path.join(cluster.agents[0]!.workDir, "frameworks", framework.frameworkId, "executors", taskId!, "runs", "latest", "where")
      yield* Scenarios.within("the task's file", 10_000, Effect.gen(function*() {
        while (!fs.existsSync(where) || fs.readFileSync(where, "utf8") === "") yield* Effect.sleep("50 millis")
      }))
      // The task ran in the agent's container (named after the agent), not on this machine.
      expect(fs.readFileSync(where, "utf8").trim()).toBe("agent-1")

      // etcd stopped: the master steps down; started again: it leads with its agent and task.
      yield* cluster.etcd!.stop
      yield* Scenarios.within("the master to step down", 30_000, Effect.gen(function*() {
        while ((yield* cluster.leader) !== undefined) yield* Effect.sleep("200 millis")
      }))
      yield* cluster.etcd!.start
      yield* cluster.waitFor(
        "the master to lead again with the agent and the task",
        (s) => s.agents[0]?.state === v1.Agent_State.ACTIVE && Scenarios.running(s, [taskId!]),
        { timeout: 45_000 }
      )
      expect(Scenarios.inOrder(cluster.events.texts(), ["etcd stopped", "etcd started"])).toBe(true)

      // A paused agent's container is frozen.
      const agentContainer = left.containers.find((id) => docker("inspect", "--format", '{{index .Config.Labels "berth.testkit.role"}}', id) === "agent")!
      yield* cluster.agents[0]!.pause
      expect(docker("inspect", "--format", "{{.State.Paused}}", agentContainer)).toBe("true")
      yield* cluster.agents[0]!.resume
      expect(docker("inspect", "--format", "{{.State.Paused}}", agentContainer)).toBe("false")
      // A partition takes the agent's container off the cluster's network.
      const networkName = docker("network", "inspect", "--format", "{{.Name}}", left.networks[0]!)
      yield* cluster.agents[0]!.partition
      expect(docker("inspect", "--format", "{{json .NetworkSettings.Networks}}", agentContainer)).not.toContain(networkName)
      yield* cluster.agents[0]!.heal
      expect(docker("inspect", "--format", "{{json .NetworkSettings.Networks}}", agentContainer)).toContain(networkName)
      // A killed agent's process is gone from its container, which stays up.
      yield* cluster.agents[0]!.kill
      expect(inContainer(agentContainer, "sh", "-c", "ps -eo args 2>/dev/null || cat /proc/[0-9]*/cmdline | tr '\\0' ' '")).not.toMatch(/berth\.js agent/)
      expect(docker("inspect", "--format", "{{.State.Running}}", agentContainer)).toBe("true")
      yield* cluster.agents[0]!.restart

      const workDir = cluster.workDir
      yield* Scope.close(scope, Exit.void)
      expect(leftOf(workDir)).toEqual({ containers: [], networks: [] })
      expect(fs.existsSync(workDir)).toBe(false)
    }), 150_000)

  it.live("a failing test leaves no container or network behind, and gets the report with each container's last lines", () =>
    Effect.gen(function*() {
      const reports: Array<string> = []
      let workDir = ""
      let during = { containers: [] as Array<string>, networks: [] as Array<string> }
      const exit = yield* Effect.exit(Effect.scoped(Effect.gen(function*() {
        const cluster = yield* TestCluster.make({
          backend: "containers",
          storage: "memory",
          agents: 2,
          agentResources: "cpus:1;mem:256",
          dumpOnFailure: (report) => reports.push(report)
        })
        workDir = cluster.workDir
        during = leftOf(workDir)
        cluster.events.record("about to fail")
        return yield* Effect.fail("deliberate failure")
      })))
      expect(Exit.isFailure(exit)).toBe(true)
      expect(during.containers).toHaveLength(3)
      expect(during.networks).toHaveLength(1)
      expect(leftOf(workDir)).toEqual({ containers: [], networks: [] })
      expect(fs.existsSync(workDir)).toBe(false)
      expect(reports).toHaveLength(1)
      expect(reports[0]).toContain("===== berth testkit: cluster report (containers backend")
      expect(reports[0]).toContain("about to fail")
      expect(reports[0]).toMatch(/----- agent-2 \(pid \d+ in its container\), last 20 lines of .*agent-2\.log -----\n[^]*berth agent \S+ registered/)

      // A start that fails halfway (a master that cannot start) leaves nothing either; the report
      // (written because the start failed) names the cluster's temp dir, hence its label.
      const halfway: Array<string> = []
      const failed = yield* Effect.exit(Effect.scoped(TestCluster.make({
        backend: "containers",
        storage: "memory",
        agents: 1,
        dumpOnFailure: (report) => halfway.push(report),
        master: { agentPingMisses: 1000 }
      })))
      expect(Exit.isFailure(failed)).toBe(true)
      expect(Exit.isFailure(failed) ? Cause.pretty(failed.cause) : "").toMatch(/agent-ping-misses: must be an integer in 1\.\.64/)
      const halfwayDir = /\(containers backend, (\S+)\)/.exec(halfway[0] ?? "")?.[1]
      expect(halfwayDir).toBeDefined()
      expect(leftOf(halfwayDir!)).toEqual({ containers: [], networks: [] })
      expect(fs.existsSync(halfwayDir!)).toBe(false)
    }), 120_000)

  it("bad options are refused before anything starts", async () => {
    await expect(TestCluster.start({ backend: "containers", masters: 2, storage: "memory" })).rejects.toMatchObject({
      _tag: "InvalidOptions",
      field: "storage"
    })
    await expect(TestCluster.start({ backend: "containers", master: { host: "0.0.0.0" } })).rejects.toMatchObject({
      _tag: "InvalidOptions",
      field: "master.host"
    })
    await expect(TestCluster.start({ backend: "containers", agents: 0 })).rejects.toMatchObject({ _tag: "InvalidOptions", field: "agents" })
    await expect(TestCluster.start({ backend: "containers", clock: "virtual" })).rejects.toMatchObject({ _tag: "InvalidOptions", field: "clock" })
    await expect(TestCluster.start({ backend: "containers", proxy: true })).rejects.toMatchObject({ _tag: "InvalidOptions", field: "proxy" })
  })
})
