import { Master } from "@berth/cluster-core"
import { StateStore } from "@berth/storage"
import { Effect, Layer } from "effect"

/** A master whose in-memory registry lives as long as the enclosing scope (not just its start). */
export const start = (config: Partial<Master.Config> = {}) =>
  Effect.gen(function*() {
    const services = yield* Layer.build(StateStore.layerMemory)
    return yield* Master.start({ port: 0, ...config }).pipe(Effect.provide(services))
  })
