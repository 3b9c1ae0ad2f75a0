import * as fs from "node:fs"
import * as path from "node:path"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Option, Redacted, Stream } from "effect"
import { Etcd3 } from "etcd3"
import { EtcdServer, StateStore } from "@berth/storage"
import { etcdLayer, useEtcd } from "./etcdHarness.ts"
import { stateStoreSuite } from "./stateStoreSuite.ts"

const etcd = useEtcd()

stateStoreSuite({ name: "etcd", layer: () => etcdLayer(etcd), time: "real" })

const bytes = (text: string): Uint8Array => new TextEncoder().encode(text)

/** The raw etcd keys under a prefix, as etcdctl would list them. */
const rawKeys = (prefix: string) =>
  Effect.acquireUseRelease(
    Effect.sync(() => new Etcd3({ hosts: etcd().endpoint })),
    (client) => Effect.promise(() => client.getAll().prefix(prefix).keys()),
    (client) => Effect.sync(() => client.close())
  )

describe("StateStore.layerEtcd", () => {
  it.live("stores plain values at <prefix><key>, readable with any etcd client", () =>
    Effect.gen(function*() {
      const store = yield* StateStore.make(StateStore.layerEtcd({ endpoints: [etcd().endpoint], prefix: "plain/" }))
      yield* store.put("framework-id", bytes("f-1"))
      const client = new Etcd3({ hosts: etcd().endpoint })
      yield* Effect.addFinalizer(() => Effect.sync(() => client.close()))
      expect(yield* Effect.promise(() => client.get("plain/framework-id").string())).toBe("f-1")
    }))

  it.live("chunks of a large value never outlive it: overwrite, delete, stale writes and lease expiry leave none", () =>
    Effect.gen(function*() {
      const prefix = "chunks/"
      const store = yield* StateStore.make(StateStore.layerEtcd({ endpoints: [etcd().endpoint], prefix }))
      const big = new Uint8Array(3 * 1024 * 1024).fill(7)
      yield* store.put("a", big)
      expect((yield* rawKeys(prefix)).filter((k) => k.includes("\u0000c/")).length).toBe(3)
      // a failed compare-and-set uploads chunks, then removes them
      yield* Effect.flip(store.compareAndSet("a", 5, big))
      expect((yield* rawKeys(prefix)).filter((k) => k.includes("\u0000c/")).length).toBe(3)
      yield* store.put("a", big)
      expect((yield* rawKeys(prefix)).filter((k) => k.includes("\u0000c/")).length).toBe(3)
      yield* store.put("a", bytes("small"))
      expect(yield* rawKeys(prefix)).toEqual([`${prefix}a`])
      yield* store.put("b", big)
      yield* store.delete("b")
      expect(yield* rawKeys(prefix)).toEqual([`${prefix}a`])
      const lease = yield* store.grantLease("60 seconds")
      yield* store.put("c", big, { lease })
      yield* store.revokeLease(lease)
      expect(yield* rawKeys(prefix)).toEqual([`${prefix}a`])
      // list("") never shows the chunks
      expect((yield* store.list("")).map((e) => e.key)).toEqual(["a"])
    }), 60_000)

  it.live("a value that looks like a chunk manifest is stored safely", () =>
    Effect.gen(function*() {
      const store = yield* StateStore.make(etcdLayer(etcd))
      const tricky = bytes("\u0000berth-chunked-v1\u0000{\"upload\":\"x\",\"chunks\":1,\"size\":1}")
      yield* store.put("tricky", tricky)
      expect(Option.getOrThrow(yield* store.get("tricky")).value).toEqual(tricky)
    }))

  it.live("a watch from a compacted revision fails with RevisionCompacted", () =>
    Effect.gen(function*() {
      const store = yield* StateStore.make(etcdLayer(etcd))
      const first = yield* store.put("k", bytes("1"))
      const second = yield* store.put("k", bytes("2"))
      const client = new Etcd3({ hosts: etcd().endpoint })
      yield* Effect.addFinalizer(() => Effect.sync(() => client.close()))
      yield* Effect.promise(() => client.kv.compact({ revision: second.revision, physical: true }))
      const error = yield* Effect.flip(Stream.runDrain(store.watch("", { fromRevision: first.revision })))
      expect(error).toMatchObject({ _tag: "RevisionCompacted", requested: first.revision })
      expect(error.message).toContain("compacted")
    }))

  it.live("refuses bad options with a StoreError", () =>
    Effect.gen(function*() {
      const noEndpoints = yield* Effect.flip(StateStore.make(StateStore.layerEtcd({ endpoints: [] })))
      expect(noEndpoints.message).toContain("at least one endpoint")
      const small = yield* Effect.flip(StateStore.make(StateStore.layerEtcd({ endpoints: [etcd().endpoint], maxRequestBytes: 10 })))
      expect(small.message).toContain("maxRequestBytes")
    }))

  it.live("an unreachable etcd fails with a StoreError naming the endpoints", () =>
    Effect.gen(function*() {
      const store = yield* StateStore.make(StateStore.layerEtcd({ endpoints: ["127.0.0.1:1"], requestTimeout: "1 second" }))
      const error = yield* Effect.flip(store.get("k"))
      expect(error).toMatchObject({ _tag: "StoreError", backend: "etcd", operation: "get", key: "k" })
      expect(error.message).toContain("etcd is unreachable")
      expect(error.message).toContain("http://127.0.0.1:1")
    }))

  it.live("layerFromUrl accepts etcd:<endpoint>?prefix=", () =>
    Effect.gen(function*() {
      const url = `etcd:${etcd().endpoint.replace("http://", "")}?prefix=from-url/`
      const entry = yield* StateStore.StateStore.use((s) => s.put("k", bytes("v"))).pipe(
        Effect.provide(StateStore.layerFromUrl(url))
      )
      expect(entry.version).toBe(1)
      expect(yield* rawKeys("from-url/")).toEqual(["from-url/k"])
    }))
})

describe("StateStore.layerEtcd with TLS and authentication", () => {
  const tls = path.join(import.meta.dirname, "fixtures", "tls")
  const secure = useEtcd({
    tls: { cert: path.join(tls, "server.pem"), key: path.join(tls, "server.key"), clientCa: path.join(tls, "ca.pem") }
  })
  const pem = (name: string) => fs.readFileSync(path.join(tls, name), "utf8")
  const credentials = () => ({ ca: pem("ca.pem"), cert: pem("client.pem"), key: pem("client.key") })

  it.live("talks mutual TLS, then username and password once auth is enabled", () =>
    Effect.gen(function*() {
      const endpoint = secure().endpoint
      expect(endpoint.startsWith("https://")).toBe(true)
      const store = yield* StateStore.make(StateStore.layerEtcd({ endpoints: [endpoint], tls: credentials() }))
      yield* store.put("k", bytes("over tls"))
      expect(Option.getOrThrow(yield* store.get("k")).value).toEqual(bytes("over tls"))

      // without a client certificate the server refuses
      const anonymous = yield* StateStore.make(StateStore.layerEtcd({
        endpoints: [endpoint],
        tls: { ca: pem("ca.pem") },
        requestTimeout: "2 seconds"
      }))
      const refused = yield* Effect.flip(anonymous.get("k"))
      expect(refused._tag).toBe("StoreError")

      // enable authentication: a root user, then a berth user with a role on its prefix
      const admin = new Etcd3({
        hosts: endpoint,
        credentials: { rootCertificate: Buffer.from(pem("ca.pem")), certChain: Buffer.from(pem("client.pem")), privateKey: Buffer.from(pem("client.key")) }
      })
      yield* Effect.addFinalizer(() => Effect.sync(() => admin.close()))
      yield* Effect.promise(async () => {
        await admin.user("root").create("root-pw")
        await admin.user("root").addRole("root")
        await admin.role("berth").create()
        await admin.role("berth").grant({ permission: "Readwrite", range: admin.range({ prefix: "app/" }) })
        await admin.user("berth").create("s3cret")
        await admin.user("berth").addRole("berth")
        await admin.auth.authEnable({})
      })
      const user = (password: string) =>
        StateStore.layerEtcd({
          endpoints: [endpoint],
          prefix: "app/",
          tls: credentials(),
          auth: { username: "berth", password: Redacted.make(password) }
        })
      const authed = yield* StateStore.make(user("s3cret"))
      yield* authed.put("k", bytes("with a password"))
      expect(Option.getOrThrow(yield* authed.get("k")).value).toEqual(bytes("with a password"))
      const wrong = yield* StateStore.make(user("wrong"))
      const denied = yield* Effect.flip(wrong.get("k"))
      expect(denied.message).toMatch(/refused the credentials|authentication failed/i)
      // outside its role's prefix the user is refused
      const outside = yield* StateStore.make(StateStore.layerEtcd({
        endpoints: [endpoint],
        prefix: "other/",
        tls: credentials(),
        auth: { username: "berth", password: Redacted.make("s3cret") }
      }))
      const forbidden = yield* Effect.flip(outside.put("k", bytes("x")))
      expect(forbidden.message).toMatch(/permission/i)
    }), 60_000)
})

describe("EtcdServer", () => {
  it.live("fails with install instructions when the binary is missing", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(EtcdServer.start({ binary: "/nonexistent/etcd" }))
      expect(error._tag).toBe("EtcdServerError")
      expect(error.message).toContain("the etcd binary was not found")
      expect(error.message).toContain("apt-get install etcd-server")
      expect(yield* EtcdServer.isInstalled("/nonexistent/etcd")).toBe(false)
      expect(yield* EtcdServer.isInstalled()).toBe(true)
    }))

  it.live("stops its process and removes its data directory when the scope closes", () =>
    Effect.gen(function*() {
      const { dataDir, pid } = yield* Effect.scoped(Effect.gen(function*() {
        const server = yield* EtcdServer.start()
        const pid = yield* server.pid
        expect(pid).toBeGreaterThan(0)
        return { dataDir: server.dataDir, pid: pid! }
      }))
      expect(() => process.kill(pid, 0)).toThrow()
      expect(fs.existsSync(dataDir)).toBe(false)
    }), 30_000)
})
