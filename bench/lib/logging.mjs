/**
 * Logging for in-process cluster parts during a benchmark. stdout is reserved for the one JSON
 * result, so logs go to stderr; warnings and errors are also collected, because a benchmark that
 * "passed" while the cluster complained is a finding in itself.
 */
import { Effect, Logger, References } from "effect"

/** Provides stderr logging at Warn and up, and collects those entries into `sink` (strings). */
export const quietLogging = (sink, limit = 100) => (effect) =>
  effect.pipe(
    Effect.provide(
      Logger.layer([
        Logger.withConsoleError(Logger.formatLogFmt),
        Logger.make((options) => {
          if (sink.length < limit) sink.push(Logger.formatLogFmt.log(options))
        })
      ])
    ),
    Effect.provideService(References.MinimumLogLevel, "Warn")
  )
