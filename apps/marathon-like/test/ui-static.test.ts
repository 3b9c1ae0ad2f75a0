// The UI asset resolver the HTTP server mounts under /ui/: index, fingerprinted assets with their
// content types and cache policy, and refusal of everything outside ui-dist/.
import { describe, expect, it } from "@effect/vitest"
import { Effect, Option } from "effect"
import { readdirSync, readFileSync } from "node:fs"
import { relativeAssetPath, resolveUiAsset } from "../src/internal/ui/static.ts"

const uiDist = new URL("../ui-dist/", import.meta.url)
const assets = readdirSync(new URL("assets/", uiDist))
const js = assets.find((f) => f.endsWith(".js"))
const css = assets.find((f) => f.endsWith(".css"))

describe("resolveUiAsset", () => {
  it.effect("serves index.html for /ui/, /ui and /ui/index.html, revalidated on every load", () =>
    Effect.gen(function*() {
      const index = readFileSync(new URL("index.html", uiDist))
      for (const path of ["/ui/", "/ui", "/ui/index.html", "/ui/?x=1"]) {
        const asset = Option.getOrThrow(yield* resolveUiAsset(path))
        expect(asset.contentType).toBe("text/html; charset=utf-8")
        expect(asset.cacheControl).toBe("no-cache")
        expect(Buffer.from(asset.body).equals(index)).toBe(true)
      }
    }))

  it.effect("serves the bundle that index.html links, with JS and CSS types and an immutable cache", () =>
    Effect.gen(function*() {
      expect(js).toBeDefined()
      expect(css).toBeDefined()
      const html = readFileSync(new URL("index.html", uiDist), "utf8")
      expect(html).toContain(`/ui/assets/${js}`)
      expect(html).toContain(`/ui/assets/${css}`)
      const script = Option.getOrThrow(yield* resolveUiAsset(`/ui/assets/${js}`))
      expect(script.contentType).toBe("text/javascript; charset=utf-8")
      expect(script.cacheControl).toContain("immutable")
      expect(script.body.byteLength).toBeGreaterThan(1000)
      const style = Option.getOrThrow(yield* resolveUiAsset(`/ui/assets/${css}`))
      expect(style.contentType).toBe("text/css; charset=utf-8")
      // Mantine's stylesheet is in the bundle.
      expect(Buffer.from(style.body).toString("utf8")).toContain("--mantine-color-blue-6")
    }))

  it.effect("answers none for unknown files and paths outside /ui/", () =>
    Effect.gen(function*() {
      for (const path of ["/ui/nope.js", "/ui/assets/", "/ui/assets", "/", "/v2/apps", "/uix/index.html", "/package.json"]) {
        expect(Option.isNone(yield* resolveUiAsset(path)), path).toBe(true)
      }
    }))

  it.effect("refuses path traversal in every spelling without reading outside ui-dist/", () =>
    Effect.gen(function*() {
      const probes = [
        "/ui/../package.json",
        "/ui/assets/../../package.json",
        "/ui/%2e%2e/package.json",
        "/ui/%2E%2E%2Fpackage.json",
        "/ui/..%2f..%2fpackage.json",
        "/ui/..\\package.json",
        "/ui/%5c..%5cpackage.json",
        "/ui//etc/passwd",
        "/ui/%2fetc%2fpasswd",
        "/ui/index.html%00.png",
        "/ui/./index.html",
        "/ui/%252e%252e/package.json",
        "/ui/assets/%252e%252e%252f..%252fpackage.json",
        "/ui/%E0%A4%A"
      ]
      for (const path of probes) {
        expect(Option.isNone(yield* resolveUiAsset(path)), path).toBe(true)
      }
      // All but the double-encoded ones are refused before any file system access; those decode
      // to a harmless literal name ("%2e%2e") that does not exist.
      for (const path of probes.filter((p) => !p.includes("%25"))) expect(relativeAssetPath(path), path).toBeUndefined()
    }))
})
