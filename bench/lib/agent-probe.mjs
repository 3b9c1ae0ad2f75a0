/**
 * Preloaded into the `berth agent` child by task-overhead.mjs (`--expose-gc --import`): on
 * SIGUSR2 it forces a full GC and writes the heap figures as one line on stderr. RSS alone cannot
 * tell garbage the agent has not collected yet from memory it keeps; the live heap after a GC can.
 * It changes nothing else in the agent.
 */
process.on("SIGUSR2", () => {
  globalThis.gc?.()
  const m = process.memoryUsage()
  process.stderr.write(
    `BENCH_PROBE ${JSON.stringify({ heapUsed: m.heapUsed, heapTotal: m.heapTotal, external: m.external, arrayBuffers: m.arrayBuffers, rss: m.rss })}\n`
  )
})
