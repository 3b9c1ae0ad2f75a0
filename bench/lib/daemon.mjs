/**
 * Child processes for the benchmarks: `start` spawns a Node program (a `berth` command, the
 * marathon-like server, ...) and resolves once its stdout matches a pattern, e.g. the
 * "listening on 127.0.0.1:PORT" line. Every child is kept in `children` so a benchmark can stop
 * them all (on its deadline, or when it is done).
 */
import { spawn } from "node:child_process"

export const make = () => {
  const children = []
  /**
   * Starts `node [nodeFlags] program ...args`; resolves `{ child, match }` with the first match of
   * `pattern` in its stdout (stdout beyond 64 KB is not kept: the pattern is an early line), and
   * rejects if the program exits first. `onChunk` sees every stdout chunk.
   */
  const start = (program, args, pattern, { nodeFlags = [], onChunk } = {}) =>
    new Promise((resolve, reject) => {
      const child = spawn(process.execPath, [...nodeFlags, program, ...args], { stdio: ["ignore", "pipe", "inherit"] })
      children.push(child)
      let buffered = ""
      child.stdout.on("data", (chunk) => {
        onChunk?.(chunk)
        if (buffered.length > 65536) return
        buffered += chunk
        const match = pattern.exec(buffered)
        if (match !== null) resolve({ child, match })
      })
      child.on("exit", (code, signal) => reject(new Error(`${args[0] ?? program} exited with ${code ?? signal}`)))
    })
  return { children, start }
}
