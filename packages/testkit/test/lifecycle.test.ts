import { it } from "@effect/vitest"
import { TestCluster, TestClusterError } from "@berth/testkit"
import { Effect } from "effect"
import { spawnSync } from "node:child_process"
import { fileURLToPath } from "node:url"
import { describe, expect } from "vitest"

const root = fileURLToPath(new URL("../../..", import.meta.url))

describe("UnsupportedFault names the real reason and the remedy", () => {
  it.live("proxy: false: partition and status update faults blame the option, not the backend", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ agents: 1, proxy: false })
      const partition = yield* cluster.agents[0]!.partition.pipe(Effect.flip)
      expect(partition.message).toBe(
        "partition is not supported by this in-process cluster: it has no fault proxy (it was started with proxy: false); start it without proxy: false"
      )
      const updates = yield* cluster.faults.statusUpdates({ drop: 0.5 }).pipe(Effect.flip)
      expect(updates._tag).toBe("UnsupportedFault")
      expect(updates.message).toContain("status update faults is not supported by this in-process cluster: it has no fault proxy (it was started with proxy: false)")
      expect(updates.message).not.toContain("processes")
    }), 60_000)

  it.live("tls: the missing proxy is blamed on TLS", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ agents: 1, tls: true })
      const heal = yield* cluster.agents[0]!.heal.pipe(Effect.flip)
      expect(heal.message).toContain("it was started with tls, which the proxy does not speak")
      expect(heal.message).toContain("start it without tls")
    }), 60_000)

  it.live("the live clock: advance asks for clock: virtual; an agent pause asks for the processes backend", () =>
    Effect.gen(function*() {
      const cluster = yield* TestCluster.make({ agents: 1 })
      const advance = yield* cluster.advance("1 hour").pipe(Effect.flip)
      expect(advance.message).toBe(
        'advance is not supported by this in-process cluster: the cluster runs on the live clock; start it with TestCluster.make({ clock: "virtual" })'
      )
      const pause = yield* cluster.agents[0]!.pause.pipe(Effect.flip)
      expect(pause.message).toContain("agent pause (SIGSTOP) is not supported by this in-process cluster")
      expect(pause.message).toContain('use TestCluster.make({ backend: "processes" })')
    }), 60_000)

  it("the containers backend's missing proxy names the backends that have one", () => {
    // Built as containers.ts builds it (starting Docker here would prove nothing more about text).
    const error = new TestClusterError.UnsupportedFault({
      fault: "status update faults",
      backend: "containers",
      reason: "it has no fault proxy (agents reach the masters over a Docker network)",
      remedy: 'use TestCluster.make({ backend: "in-process" }) or "processes"'
    })
    expect(error.message).toBe(
      'status update faults is not supported by this containers cluster: it has no fault proxy (agents reach the masters over a Docker network); use TestCluster.make({ backend: "in-process" }) or "processes"'
    )
    expect(new TestClusterError.UnsupportedFault({ fault: "x", backend: "b" }).message).toBe("x is not supported by this b cluster: the b backend cannot inject it")
  })
})

describe("a plain Node script using TestCluster.start exits by itself once the cluster is disposed", () => {
  // Anything the cluster leaves armed (a timer, a socket, a child's pipe) keeps Node's event loop
  // alive: the script would then hang until the spawnSync timeout kills it.
  const script = (options: string, body = "") => `
    const [{ TestCluster }, { Effect }] = await Promise.all([import("@berth/testkit"), import("effect")])
    const c = await TestCluster.start(${options})
    ${body}
    await c[Symbol.asyncDispose]()
    console.log("disposed")
  `
  it.each([
    ["{ agents: 1 }", ""],
    ["{ agents: 2, proxy: false }", ""],
    ['{ agents: 1, clock: "virtual" }', 'await Effect.runPromise(c.advance("10 minutes"))'],
    ["{ agents: 1 }", "await Effect.runPromise(c.agents[0].statusUpdates({ delayMs: 60000 }))"],
    ["{ agents: 1 }", "await Effect.runPromise(Effect.andThen(c.agents[0].partition, c.agents[0].heal))"],
    ["{ agents: 1 }", "await Effect.runPromise(c.agents[0].kill)"]
  ])("TestCluster.start(%s) then %s", (options, body) => {
    const result = spawnSync(process.execPath, ["--input-type=module", "-e", script(options, body)], {
      cwd: root,
      encoding: "utf8",
      timeout: 45_000,
      killSignal: "SIGKILL"
    })
    expect(result.stderr).not.toMatch(/Error/)
    expect(result.signal, `killed by the timeout: something kept the script alive\n${result.stderr}`).toBeNull()
    expect(result.stdout).toContain("disposed")
    expect(result.status).toBe(0)
  }, 60_000)
})
