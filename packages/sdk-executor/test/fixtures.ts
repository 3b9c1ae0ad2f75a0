import { createHash } from "node:crypto"
import * as fs from "node:fs"
import * as http from "node:http"
import * as net from "node:net"
import * as path from "node:path"
import { crc32 } from "node:zlib"
import { Effect } from "effect"
import * as tar from "tar"

/** What a route of the test HTTP server does with a request. */
export type Route = (request: http.IncomingMessage, response: http.ServerResponse) => void

export const reply = (status: number, body: string | Buffer = ""): Route => (_, response) => {
  response.writeHead(status, { "content-length": Buffer.byteLength(body) })
  response.end(body)
}

/**
 * A real HTTP server on 127.0.0.1 (a free port) whose routes the test sets and changes, counting
 * every request per path. Closed, with its connections, when the scope closes.
 */
export const httpServer = Effect.acquireRelease(
  Effect.promise(() =>
    new Promise<{
      readonly server: http.Server
      readonly port: number
      readonly url: (path: string) => string
      readonly hits: (path: string) => number
      readonly route: (path: string, route: Route) => void
    }>((resolve) => {
      const routes = new Map<string, Route>()
      const hits = new Map<string, number>()
      const server = http.createServer((request, response) => {
        const url = request.url ?? "/"
        hits.set(url, (hits.get(url) ?? 0) + 1)
        ;(routes.get(url) ?? reply(404, "not found"))(request, response)
      })
      server.listen(0, "127.0.0.1", () => {
        const port = (server.address() as net.AddressInfo).port
        resolve({
          server,
          port,
          url: (p) => `http://127.0.0.1:${port}${p}`,
          hits: (p) => hits.get(p) ?? 0,
          route: (p, r) => void routes.set(p, r)
        })
      })
    })
  ),
  ({ server }) =>
    Effect.promise(() =>
      new Promise<void>((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      })
    )
)

/** A real TCP server on 127.0.0.1 that accepts and closes connections, counting them; `close` stops listening. */
export const tcpServer = Effect.acquireRelease(
  Effect.promise(() =>
    new Promise<{ readonly port: number; readonly connections: () => number; readonly close: () => Promise<void> }>(
      (resolve) => {
        let connections = 0
        const server = net.createServer((socket) => {
          connections += 1
          socket.destroy()
        })
        server.listen(0, "127.0.0.1", () =>
          resolve({
            port: (server.address() as net.AddressInfo).port,
            connections: () => connections,
            close: () => new Promise<void>((done) => (server.listening ? server.close(() => done()) : done()))
          }))
      }
    )
  ),
  (server) => Effect.promise(server.close)
)

/** A port on 127.0.0.1 that nothing listens on (it was free a moment ago). */
export const freePort = Effect.promise(() =>
  new Promise<number>((resolve) => {
    const server = net.createServer()
    server.listen(0, "127.0.0.1", () => {
      const port = (server.address() as net.AddressInfo).port
      server.close(() => resolve(port))
    })
  })
)

export const sha256 = (data: string | Buffer): string => `sha256:${createHash("sha256").update(data).digest("hex")}`

export interface ZipEntry {
  readonly name: string
  readonly data?: string
  /** Unix mode with the file type bits, e.g. 0o100755; 0o120777 with `data` as the target is a symlink. */
  readonly mode?: number
}

/**
 * A zip archive (stored, no compression) with exactly the entries given, names unchecked, so
 * tests can build the hostile archives that zip tools refuse to make.
 */
export const makeZip = (entries: ReadonlyArray<ZipEntry>): Buffer => {
  const locals: Array<Buffer> = []
  const centrals: Array<Buffer> = []
  let offset = 0
  for (const entry of entries) {
    const name = Buffer.from(entry.name, "utf8")
    const data = Buffer.from(entry.data ?? "", "utf8")
    const mode = entry.mode ?? (entry.name.endsWith("/") ? 0o040755 : 0o100644)
    const crc = crc32(data)
    const local = Buffer.alloc(30)
    local.writeUInt32LE(0x04034b50, 0)
    local.writeUInt16LE(20, 4) // version needed
    local.writeUInt16LE(0x0800, 6) // UTF-8 names
    local.writeUInt16LE(0, 8) // stored
    local.writeUInt16LE(0, 10) // time
    local.writeUInt16LE(0x21, 12) // date: 1980-01-01
    local.writeUInt32LE(crc, 14)
    local.writeUInt32LE(data.length, 18)
    local.writeUInt32LE(data.length, 22)
    local.writeUInt16LE(name.length, 26)
    local.writeUInt16LE(0, 28)
    const central = Buffer.alloc(46)
    central.writeUInt32LE(0x02014b50, 0)
    central.writeUInt16LE((3 << 8) | 20, 4) // made by unix
    central.writeUInt16LE(20, 6)
    central.writeUInt16LE(0x0800, 8)
    central.writeUInt16LE(0, 10)
    central.writeUInt16LE(0, 12)
    central.writeUInt16LE(0x21, 14)
    central.writeUInt32LE(crc, 16)
    central.writeUInt32LE(data.length, 20)
    central.writeUInt32LE(data.length, 24)
    central.writeUInt16LE(name.length, 28)
    central.writeUInt32LE((mode << 16) >>> 0, 38)
    central.writeUInt32LE(offset, 42)
    locals.push(local, name, data)
    centrals.push(central, name)
    offset += local.length + name.length + data.length
  }
  const directory = Buffer.concat(centrals)
  const end = Buffer.alloc(22)
  end.writeUInt32LE(0x06054b50, 0)
  end.writeUInt16LE(entries.length, 8)
  end.writeUInt16LE(entries.length, 10)
  end.writeUInt32LE(directory.length, 12)
  end.writeUInt32LE(offset, 16)
  return Buffer.concat([...locals, directory, end])
}

/**
 * A gzipped tar of `files` (path → content; a path ending in "@755" is made executable) built with
 * the same library the fetcher uses, written to `file`. `paths` overrides what goes into the
 * archive, relative to the files' root, so tests can add hostile paths such as "../x".
 */
export const makeTarGz = async (
  dir: string,
  file: string,
  files: Record<string, string>,
  options: { readonly cwd?: string; readonly paths?: ReadonlyArray<string>; readonly symlinks?: Record<string, string> } =
    {}
): Promise<void> => {
  const root = path.join(dir, "tar-root")
  for (const [name, content] of Object.entries(files)) {
    const executable = name.endsWith("@755")
    const target = path.join(root, executable ? name.slice(0, -4) : name)
    fs.mkdirSync(path.dirname(target), { recursive: true })
    fs.writeFileSync(target, content, { mode: executable ? 0o755 : 0o644 })
  }
  for (const [name, target] of Object.entries(options.symlinks ?? {})) {
    fs.mkdirSync(path.dirname(path.join(root, name)), { recursive: true })
    fs.symlinkSync(target, path.join(root, name))
  }
  const cwd = path.join(root, options.cwd ?? ".")
  fs.mkdirSync(cwd, { recursive: true })
  await tar.c(
    { gzip: true, file, cwd, portable: true, preservePaths: true },
    [...(options.paths ?? fs.readdirSync(cwd))]
  )
}
