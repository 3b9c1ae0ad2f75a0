import { afterEach, describe, expect, it } from "vitest"
import { spawn, spawnSync, type ChildProcess } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { alive, descendants } from "./support/processes.ts"

const berth = fileURLToPath(new URL("../packages/cluster-core/dist/bin/berth.js", import.meta.url))
const { BERTH_LOG_LEVEL: _ignored, ...baseEnv } = process.env

const started: Array<ChildProcess> = []
const dirs: Array<string> = []
afterEach(() => {
  for (const child of started.splice(0)) if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL")
  for (const dir of dirs.splice(0)) fs.rmSync(dir, { recursive: true, force: true })
})

const tmp = () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "berth-cli-flags-"))
  dirs.push(dir)
  return dir
}

const waitFor = async (what: string, condition: () => boolean, ms = 60_000) => {
  const deadline = Date.now() + ms
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 100))
  }
}

/** Starts `berth master` on a free port; resolves with its output so far once it listens. */
const master = async (args: ReadonlyArray<string>, env: NodeJS.ProcessEnv = {}) => {
  const child = spawn(process.execPath, [berth, "master", "--port", "0", "--state", "memory:", ...args], {
    env: { ...baseEnv, ...env },
    stdio: ["ignore", "pipe", "pipe"]
  })
  started.push(child)
  let output = ""
  child.stdout!.on("data", (chunk) => (output += chunk))
  child.stderr!.on("data", (chunk) => (output += chunk))
  await waitFor("the master to listen", () => /berth master listening on \S+\n/.test(output))
  return { child, output: () => output, endpoint: /berth master listening on (\S+)/.exec(output)![1]! }
}

const stop = (child: ChildProcess) =>
  new Promise<number | null>((resolve) => {
    child.once("exit", (code) => resolve(code))
    child.kill("SIGTERM")
  })

describe("berth --log-level", () => {
  it.each([
    [["master", "--log-level", "loud"], {}, /^berth master: --log-level: must be one of debug, info, warn, error, none \(got "loud"\)$/],
    [["agent", "--master", "127.0.0.1:5050", "--log-level", "INFO"], {}, /^berth agent: --log-level: must be one of debug, info, warn, error, none \(got "INFO"\)$/],
    [["dev", "--log-level", "trace"], {}, /^berth dev: --log-level: must be one of debug, info, warn, error, none/],
    [["simulate", "--masters", "127.0.0.1:5050"], { BERTH_LOG_LEVEL: "verbose" }, /^berth simulate: --log-level \(from BERTH_LOG_LEVEL\): must be one of debug, info, warn, error, none \(got "verbose"\)$/]
  ])("berth %j (env %j) exits 2 with one line naming the flag and the allowed values", (args, env, message) => {
    const result = spawnSync(process.execPath, [berth, ...args], { encoding: "utf8", timeout: 20_000, env: { ...baseEnv, ...env } })
    expect(result.status).toBe(2)
    const lines = result.stderr.trim().split("\n")
    expect(lines).toHaveLength(1)
    expect(lines[0]).toMatch(message)
    expect(result.stdout).toBe("")
  })

  it("is listed in each daemon's help, with --exit-with-parent", () => {
    for (const command of ["master", "agent", "dev", "simulate"]) {
      const result = spawnSync(process.execPath, [berth, command, "--help"], { encoding: "utf8", timeout: 20_000 })
      expect(result.status).toBe(0)
      expect(result.stdout).toContain("--log-level")
      expect(result.stdout).toContain("--exit-with-parent")
    }
  })

  it("sets the minimum level: info by default, warn hides info entries, the flag wins over BERTH_LOG_LEVEL", async () => {
    const byDefault = await master([])
    expect(byDefault.output()).toMatch(/level=INFO .*message="master listening"/)
    expect(await stop(byDefault.child)).toBe(0)

    const quiet = await master(["--log-level", "warn"])
    // The plain start-up line is not a log entry: it is always printed.
    expect(quiet.output()).toContain("berth master listening on")
    expect(quiet.output()).not.toContain("level=INFO")
    expect(await stop(quiet.child)).toBe(0)

    const fromEnv = await master([], { BERTH_LOG_LEVEL: "error" })
    expect(fromEnv.output()).not.toContain("level=INFO")
    expect(await stop(fromEnv.child)).toBe(0)

    const flagWins = await master(["--log-level", "info"], { BERTH_LOG_LEVEL: "none" })
    expect(flagWins.output()).toMatch(/level=INFO .*message="master listening"/)
    expect(await stop(flagWins.child)).toBe(0)
  }, 120_000)

  it("debug shows debug entries that info hides (a re-registering agent)", async () => {
    const m = await master(["--log-level", "debug"])
    const dir = tmp()
    const agentArgs = [berth, "agent", "--master", m.endpoint, "--work-dir", dir, "--resources", "cpus:1;mem:128", "--cgroups", "off"]
    for (let round = 1; round <= 2; round++) {
      const agent = spawn(process.execPath, agentArgs, { env: baseEnv, stdio: ["ignore", "pipe", "pipe"] })
      started.push(agent)
      let out = ""
      agent.stdout!.on("data", (chunk) => (out += chunk))
      await waitFor("the agent to register", () => out.includes("registered with"))
      expect(await stop(agent)).toBe(0)
    }
    // The second start of the same agent re-registers it: logged at debug only.
    await waitFor("the re-registration entry", () => m.output().includes('level=DEBUG') && m.output().includes("agent re-registered"))
    expect(await stop(m.child)).toBe(0)
  }, 120_000)
})

describe("berth --exit-with-parent", () => {
  it("an agent whose parent is SIGKILLed stops by itself, through its clean shutdown", async () => {
    const m = await master([])
    const dir = tmp()
    const log = path.join(dir, "agent.log")
    // The wrapper starts the agent with its output in a file (so it outlives the wrapper), prints
    // the agent's pid and waits forever.
    const wrapper = spawn(
      process.execPath,
      [
        "-e",
        `const { spawn } = require("node:child_process"); const fs = require("node:fs");
         const out = fs.openSync(${JSON.stringify(log)}, "a");
         const agent = spawn(process.execPath, ${
          JSON.stringify([berth, "agent", "--exit-with-parent", "--master", m.endpoint, "--work-dir", path.join(dir, "work"), "--resources", "cpus:1;mem:128", "--cgroups", "off"])
        }, { stdio: ["ignore", out, out] });
         console.log("agent " + agent.pid); setInterval(() => {}, 1 << 30)`
      ],
      { env: baseEnv, stdio: ["ignore", "pipe", "inherit"] }
    )
    started.push(wrapper)
    let out = ""
    wrapper.stdout!.on("data", (chunk) => (out += chunk))
    await waitFor("the agent's pid", () => /agent (\d+)/.test(out))
    const agentPid = Number(/agent (\d+)/.exec(out)![1])
    await waitFor("the agent to register", () => fs.existsSync(log) && fs.readFileSync(log, "utf8").includes("registered with"))
    expect(alive(agentPid)).toBe(true)

    wrapper.kill("SIGKILL")
    await waitFor("the orphaned agent to exit", () => !alive(agentPid), 30_000)
    expect(fs.readFileSync(log, "utf8")).toContain("parent process exited; stopping")
    // The master saw the agent leave (its connection closed).
    await waitFor("the master to see the agent go", () => m.output().includes("agent disconnected"))
    expect(await stop(m.child)).toBe(0)
  }, 120_000)

  it("berth dev's master and agents stop by themselves when berth dev is SIGKILLed", async () => {
    const dir = tmp()
    const dev = spawn(process.execPath, [berth, "dev", "--port", "0", "--agents", "1", "--dir", dir, "--log-level", "warn"], {
      env: baseEnv,
      stdio: ["ignore", "pipe", "pipe"]
    })
    started.push(dev)
    let out = ""
    dev.stdout!.on("data", (chunk) => (out += chunk))
    dev.stderr!.on("data", (chunk) => (out += chunk))
    await waitFor("the cluster", () => out.includes("cluster ready"), 90_000)
    // The log level reaches the children: no info entries from the master or the agent.
    expect(out).not.toContain("level=INFO")
    const children = descendants(dev.pid!)
    started.push(...children.map((pid) => ({ pid, exitCode: null, signalCode: null, kill: (s: NodeJS.Signals) => alive(pid) && process.kill(pid, s) }) as unknown as ChildProcess))
    expect(children.length).toBeGreaterThanOrEqual(2)
    dev.kill("SIGKILL")
    // Killed right after "cluster ready", the agent may still be loading its modules: it must
    // notice a parent that died before its watch began.
    await waitFor("the children to exit", () => !children.some(alive), 45_000)
    expect(children.filter(alive)).toEqual([])
  }, 150_000)
})
