import { describe, expect, it } from "@effect/vitest"
import { Agent } from "@berth/cluster-core"
import { Effect } from "effect"
import { spawnSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"

const berth = fileURLToPath(new URL("../packages/cluster-core/dist/bin/berth.js", import.meta.url))
const agent = (...args: Array<string>) =>
  spawnSync(process.execPath, [berth, "agent", "--master", "127.0.0.1:1", "--work-dir", os.tmpdir(), ...args], { encoding: "utf8", timeout: 20_000 })

describe("agent flags for executors, cgroups and the agent's own API", () => {
  it("bad values are refused, naming the flag and the rule, before anything starts", () => {
    const cgroups = agent("--cgroups", "maybe")
    expect(cgroups.status).toBe(2)
    expect(cgroups.stderr).toContain('--cgroups: must be "auto" or "off" (got "maybe")')
    const half = agent("--api-tls-cert", "/nonexistent/cert.pem")
    expect(half.status).toBe(2)
    expect(half.stderr).toContain("--api-tls-key: --api-tls-cert and --api-tls-key go together")
    const timeout = agent("--executor-registration-timeout", "soon")
    expect(timeout.status).toBe(2)
    expect(timeout.stderr).toContain("--executor-registration-timeout")
  })

  it.live("Agent.start refuses unreadable API TLS files and a credentials file without an operator", () =>
    Effect.gen(function*() {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "berth-agent-flags-"))
      const start = (options: Partial<Agent.Options>) =>
        Effect.scoped(Agent.start({ master: "127.0.0.1:1", workDir: dir, resources: "cpus:1;mem:256;disk:256", cgroups: "off", ...options })).pipe(Effect.flip)
      const tls = yield* start({ apiTls: { certFile: path.join(dir, "missing.pem"), keyFile: path.join(dir, "missing-key.pem") } })
      expect(tls.reason).toMatch(/^apiTls\.certFile /)
      const noOperator = yield* start({ apiCredentials: { credentials: [{ principal: "fw", kind: "framework", secret: "s" }] } })
      expect(noOperator.reason).toBe('apiCredentials: the credentials file lists no principal of kind "operator": nobody could read sandbox files')
      const timeout = yield* start({ executorRegistrationTimeoutSeconds: 0 })
      expect(timeout.reason).toBe("executorRegistrationTimeoutSeconds: must be a number of seconds > 0 (got 0)")
      fs.rmSync(dir, { recursive: true, force: true })
    }))
})
