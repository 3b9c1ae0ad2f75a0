import { describe, expect, it } from "vitest"
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { alive, descendants } from "./support/processes.ts"

const root = fileURLToPath(new URL("..", import.meta.url))

describe("npm start", () => {
  it("starts a cluster, runs the hello framework, prints its output, and leaves nothing behind on Ctrl-C", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "berth-start-"))
    // Its own process group, so the test can deliver Ctrl-C the way a terminal does: SIGINT to
    // every process of the foreground group at once.
    const npm = spawn("npm", ["start", "--silent", "--", "--port", "0", "--dir", dir], {
      cwd: root,
      detached: true,
      stdio: ["ignore", "pipe", "pipe"]
    })
    let output = ""
    npm.stdout.on("data", (chunk) => (output += chunk))
    npm.stderr.on("data", (chunk) => (output += chunk))
    const exited = new Promise<number | null>((resolve) => npm.on("exit", (code) => resolve(code)))
    try {
      const deadline = Date.now() + 90_000
      while (!output.includes("press Ctrl-C to stop it")) {
        if (Date.now() > deadline) throw new Error(`npm start did not come up in time:\n${output}`)
        await new Promise((r) => setTimeout(r, 100))
      }
      expect(output).toMatch(/cluster ready: master 127\.0\.0\.1:\d+, 3 agents/)
      for (let i = 0; i < 6; i++) {
        expect(output).toMatch(new RegExp(`\\[hello-framework\\] hello-${i} FINISHED: Hello from task ${i} on `))
      }
      expect(output).toContain("hello-framework exited with code 0")
      expect(fs.existsSync(path.join(dir, "master.db"))).toBe(true)

      const processes = descendants(npm.pid!)
      // npm, the start script, berth dev, a master and three agents at least.
      expect(processes.length).toBeGreaterThanOrEqual(5)
      process.kill(-npm.pid!, "SIGINT")
      await exited
      const deadlineStop = Date.now() + 15_000
      while (processes.some(alive) && Date.now() < deadlineStop) await new Promise((r) => setTimeout(r, 100))
      expect(processes.filter(alive)).toEqual([])
      expect(output).toContain("berth: stopped")
    } finally {
      if (npm.exitCode === null && npm.signalCode === null) {
        try {
          process.kill(-npm.pid!, "SIGKILL")
        } catch {
          // Already gone.
        }
      }
      fs.rmSync(dir, { recursive: true, force: true })
    }
  }, 120_000)
})
