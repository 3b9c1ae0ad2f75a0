/**
 * Serves the bundled web UI (`ui-dist/`, built by `scripts/build-ui.mjs`) under `/ui/`.
 *
 * The HTTP layer mounts this for `GET /ui/*`: a hit answers with the file's bytes, its content
 * type and a cache policy; a miss (`Option.none()`) becomes a 404. Paths that would leave
 * `ui-dist/` (`..`, encoded slashes, NUL bytes) are misses, never reads.
 *
 * @example
 * ```ts
 * const asset = yield* resolveUiAsset("/ui/")           // index.html
 * const js = yield* resolveUiAsset("/ui/assets/app.js")  // long-lived cache
 * ```
 */
import { readFile } from "node:fs/promises"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { Effect, Option } from "effect"

/** One file of the UI bundle, ready to send. */
export interface UiAsset {
  readonly contentType: string
  /** A `Cache-Control` header value: fingerprinted assets are immutable, the HTML is revalidated. */
  readonly cacheControl: string
  readonly body: Uint8Array
}

// Resolved from this module's own location so it works from `dist/internal/ui/static.js` and
// from `src/internal/ui/static.ts` alike (both sit three levels below the package root).
const uiDist = fileURLToPath(new URL("../../../ui-dist/", import.meta.url))

const contentTypes: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".json": "application/json",
  ".map": "application/json",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".ico": "image/x-icon",
  ".woff2": "font/woff2",
  ".txt": "text/plain; charset=utf-8"
}

const extensionOf = (name: string): string => {
  const dot = name.lastIndexOf(".")
  return dot < 0 ? "" : name.slice(dot).toLowerCase()
}

/**
 * Maps a URL path under `/ui/` to a path relative to `ui-dist/`, or `undefined` when the path is
 * outside `/ui/` or tries to escape the bundle directory. Query strings and fragments are ignored.
 */
export const relativeAssetPath = (urlPath: string): string | undefined => {
  const pathOnly = urlPath.split(/[?#]/, 1)[0] ?? ""
  if (pathOnly === "/ui") return "index.html"
  if (!pathOnly.startsWith("/ui/")) return undefined
  let decoded: string
  try {
    decoded = decodeURIComponent(pathOnly.slice("/ui/".length))
  } catch {
    return undefined
  }
  if (decoded === "") return "index.html"
  if (decoded.includes("\0") || decoded.includes("\\")) return undefined
  const segments = decoded.split("/")
  // Any empty, `.` or `..` segment is refused outright rather than normalised: the bundle never
  // links such paths, so they can only be probes.
  if (segments.some((s) => s === "" || s === "." || s === "..")) return undefined
  return segments.join("/")
}

/**
 * Looks up the UI file for `urlPath` (`/ui/` and `/ui` give `index.html`). Unknown files, paths
 * outside `/ui/` and traversal attempts give `Option.none()`; this never fails.
 */
export const resolveUiAsset = (urlPath: string): Effect.Effect<Option.Option<UiAsset>> => {
  const relative = relativeAssetPath(urlPath)
  if (relative === undefined) return Effect.succeed(Option.none())
  // A file path, not a URL: URL resolution would turn a decoded "%2e%2e" back into "..".
  const file = path.join(uiDist, relative)
  // Belt and braces: the joined path must still be inside ui-dist/.
  if (!file.startsWith(uiDist)) return Effect.succeed(Option.none())
  const ext = extensionOf(relative)
  return Effect.tryPromise(() => readFile(file)).pipe(
    Effect.map((bytes) =>
      Option.some<UiAsset>({
        contentType: contentTypes[ext] ?? "application/octet-stream",
        cacheControl: relative.startsWith("assets/") ? "public, max-age=31536000, immutable" : "no-cache",
        body: new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength)
      })
    ),
    // ENOENT, EISDIR and friends all mean "no such asset" to the caller.
    Effect.catch(() => Effect.succeed(Option.none<UiAsset>()))
  )
}
