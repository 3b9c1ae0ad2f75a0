import { describe, expect, it } from "vitest"
import { spawnSync } from "node:child_process"
import { fileURLToPath } from "node:url"

const berth = fileURLToPath(new URL("../packages/cluster-core/dist/bin/berth.js", import.meta.url))
const run = (...args: Array<string>) => spawnSync(process.execPath, [berth, ...args], { encoding: "utf8", timeout: 20_000 })

describe("berth command line", () => {
  it.each([
    [["master", "--port", "abc"], /^berth master: --port: must be an integer port in 0\.\.65535 \(got "abc"\)$/],
    [["master", "--port", "70000"], /^berth master: --port: must be an integer port/],
    [["master", "--state", "postgres://x"], /^berth master: --state: must be "memory:", "sqlite:<path>" or "etcd:/],
    [["master", "--offer-timeout", "-1"], /^berth master: --offer-timeout: must be a number of seconds/],
    [["master", "--bogus", "1"], /^berth master: Unknown option '--bogus'/],
    [["agent"], /^berth agent: --master: is required$/],
    [["agent", "--master", "nohost"], /^berth agent: --master: must be host:port/],
    [["agent", "--master", "127.0.0.1:5050", "--resources", "cpus:-2"], /^berth agent: --resources: "cpus:-2": scalar must be a finite number >= 0/],
    [["agent", "--master", "127.0.0.1:5050", "--resources", "ports:[9-3]"], /^berth agent: --resources: .*begin <= end/],
    [["agent", "--master", "127.0.0.1:5050", "--attributes", "rack"], /^berth agent: --attributes: "rack": expected name:value/],
    [["dev", "--agents", "0"], /^berth dev: --agents: must be an integer in 1\.\.64/],
    [["launch"], /^berth: unknown command "launch"/]
  ])("berth %j exits 2 with one line naming the flag and the rule", (args, message) => {
    const result = run(...args)
    expect(result.status).toBe(2)
    const lines = result.stderr.trim().split("\n")
    expect(lines).toHaveLength(1)
    expect(lines[0]).toMatch(message)
    expect(result.stdout).toBe("")
  })

  it("prints help for each command", () => {
    for (const command of ["master", "agent", "dev"]) {
      const result = run(command, "--help")
      expect(result.status).toBe(0)
      expect(result.stdout).toContain(`Usage: berth ${command}`)
      expect(result.stdout).toContain("--help")
    }
  })
})
