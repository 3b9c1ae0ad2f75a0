import { Effect, Option, Stream } from "effect"
import type { Entry } from "../StateStore.ts"
import { StateStore } from "../StateStore.ts"
import type { StoreError } from "../StoreError.ts"

export const listAll = (prefix: string, pageSize: number): Stream.Stream<Entry, StoreError, StateStore> =>
  Stream.unwrap(StateStore.useSync((store) =>
    Stream.paginate(Option.none<string>(), (after) =>
      Effect.map(
        store.list(prefix, { limit: pageSize, after: Option.getOrUndefined(after) }),
        (page) =>
          [
            page,
            // A short page is the last one: no need for an empty round trip to find out.
            page.length < pageSize ? Option.none() : Option.some(Option.some(page[page.length - 1]!.key))
          ] as const
      ))
  ))
