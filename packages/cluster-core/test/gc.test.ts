import { describe, expect, it } from "@effect/vitest"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as Gc from "../src/internal/agent/gc.ts"

describe("sandbox GC", () => {
  it("removes a sandbox tree without following links: a linked volume and its data stay", async () => {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), "berth-gc-"))
    try {
      const volume = path.join(root, "volumes", "roles", "db", "v1")
      fs.mkdirSync(path.join(volume, "deep"), { recursive: true })
      fs.writeFileSync(path.join(volume, "deep", "data"), "kept")
      const sandbox = path.join(root, "frameworks", "f", "executors", "t", "runs", "r1")
      fs.mkdirSync(path.join(sandbox, "sub", "dir"), { recursive: true })
      fs.writeFileSync(path.join(sandbox, "stdout"), "out")
      fs.writeFileSync(path.join(sandbox, "sub", "dir", "file"), "x")
      fs.symlinkSync(volume, path.join(sandbox, "data"))
      fs.symlinkSync(path.join(volume, "deep", "data"), path.join(sandbox, "sub", "file-link"))
      expect(await Gc.removeTree(sandbox)).toEqual([])
      expect(fs.existsSync(sandbox)).toBe(false)
      expect(fs.readFileSync(path.join(volume, "deep", "data"), "utf8")).toBe("kept")
      expect(await Gc.removeTree(sandbox)).toEqual([]) // gone already: nothing to do
    } finally {
      fs.rmSync(root, { recursive: true, force: true })
    }
  })
})
