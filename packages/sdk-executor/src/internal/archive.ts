import { constants } from "node:fs"
import * as fs from "node:fs/promises"
import * as path from "node:path"
import * as tar from "tar"
import * as yauzl from "yauzl"

/** The archive formats the fetcher extracts, by file name; anything else is left as it is. */
export type ArchiveKind = "tar" | "zip"

export const archiveKind = (name: string): ArchiveKind | undefined => {
  const lower = name.toLowerCase()
  if (lower.endsWith(".tar.gz") || lower.endsWith(".tgz") || lower.endsWith(".tar")) return "tar"
  if (lower.endsWith(".zip")) return "zip"
  return undefined
}

/** Why an archive was refused or could not be read; its message goes into the task's status. */
export class ArchiveError extends Error {}

/**
 * Why `name` (an archive entry's path, or a relative output file name) would not land inside its
 * destination directory: absolute paths and any `..` component are refused outright, whether or
 * not they would resolve inside, which is also what tar and unzip implementations that care about
 * zip-slip do.
 */
export const pathProblem = (name: string): string | undefined => {
  if (name.includes("\0")) return "contains a NUL character"
  if (name.startsWith("/") || /^[a-zA-Z]:/.test(name) || name.startsWith("\\")) return "is an absolute path"
  if (name.split(/[/\\]/).includes("..")) return "contains a '..' component"
  return undefined
}

/**
 * Why a link entry at `name` pointing at `target` would reach outside `dest`. Symbolic link
 * targets are relative to the link's directory, hard link targets to the archive's root. This
 * lexical check catches the plain escapes; writing *through* a link is prevented separately (tar
 * refuses it itself, and `writeZip` never follows a link), so a link can never be used to put a
 * file outside the sandbox.
 */
const linkProblem = (dest: string, name: string, target: string, hard: boolean): string | undefined => {
  if (target === "" || target.includes("\0")) return "has an empty or invalid link target"
  if (target.startsWith("/")) return `links to the absolute path '${target}'`
  const resolved = path.resolve(dest, hard ? "." : path.dirname(name), target)
  const relative = path.relative(dest, resolved)
  if (relative === ".." || relative.startsWith(`..${path.sep}`) || path.isAbsolute(relative)) {
    return `links to '${target}', outside the sandbox`
  }
  return undefined
}

const refuse = (name: string, problem: string): ArchiveError =>
  new ArchiveError(`refusing archive entry '${name}': it ${problem}`)

const tooLarge = (maxBytes: number): ArchiveError =>
  new ArchiveError(`the archive would extract to more than ${maxBytes} bytes`)

const TAR_TYPES = new Set(["File", "OldFile", "ContiguousFile", "Directory", "SymbolicLink", "Link"])

/**
 * Extracts a tar archive (plain or gzipped) into `dest`. Every entry is checked before anything is
 * written, so a refused archive leaves nothing behind: no absolute or `..` paths, no links
 * pointing out, no devices or FIFOs, and no more than `maxBytes` in all. Extraction runs in strict
 * mode, so anything tar would otherwise skip with a warning fails instead.
 */
const extractTar = async (file: string, dest: string, maxBytes: number): Promise<void> => {
  let problem: ArchiveError | undefined
  let total = 0
  await tar.t({
    file,
    strict: true,
    onReadEntry: (entry) => {
      if (problem !== undefined) return
      const name = entry.path
      const pathIssue = pathProblem(name)
      if (pathIssue !== undefined) {
        problem = refuse(name, pathIssue)
      } else if (!TAR_TYPES.has(entry.type)) {
        problem = refuse(name, `is a ${entry.type}, which is not extracted`)
      } else if (entry.type === "SymbolicLink" || entry.type === "Link") {
        const linkIssue = linkProblem(dest, name, entry.linkpath ?? "", entry.type === "Link")
        if (linkIssue !== undefined) problem = refuse(name, linkIssue)
      }
      total += entry.size ?? 0
      if (problem === undefined && total > maxBytes) problem = tooLarge(maxBytes)
    }
  })
  if (problem !== undefined) throw problem
  await tar.x({ file, cwd: dest, strict: true, preservePaths: false, preserveOwner: false })
}

/** The unix mode bits a zip entry was stored with (0 when the archive was made elsewhere). */
const zipMode = (entry: yauzl.Entry): number => (entry.externalFileAttributes >>> 16) & 0o170777
const S_IFMT = 0o170000
const S_IFLNK = 0o120000
const S_IFDIR = 0o040000

/** yauzl refuses unsafe names itself; its wording is turned into ours. */
const zipError = (error: unknown): Error => {
  const message = error instanceof Error ? error.message : String(error)
  const unsafe = /^(absolute path|invalid relative path|invalid characters in fileName): (.*)$/.exec(message)
  if (unsafe !== null) return refuse(unsafe[2]!, unsafe[1] === "absolute path" ? "is an absolute path" : "escapes the sandbox")
  return new ArchiveError(`invalid zip archive: ${message}`)
}

const readAll = async (stream: NodeJS.ReadableStream, max: number): Promise<string> => {
  const chunks: Array<Buffer> = []
  let size = 0
  for await (const chunk of stream) {
    const buffer = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as string)
    size += buffer.length
    if (size > max) throw new ArchiveError("a symbolic link target is too long")
    chunks.push(buffer)
  }
  return Buffer.concat(chunks).toString("utf8")
}

/**
 * Creates the directories of `relative` under `dest` one by one, refusing to go through anything
 * that is not a real directory (a symbolic link made by an earlier entry or artifact could
 * otherwise lead outside the sandbox).
 */
export const makeDirectories = async (dest: string, relative: string, entryName: string): Promise<void> => {
  let current = dest
  for (const part of relative.split("/")) {
    if (part === "" || part === ".") continue
    current = path.join(current, part)
    let stat
    try {
      stat = await fs.lstat(current)
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error
      await fs.mkdir(current, { mode: 0o755 })
      continue
    }
    if (!stat.isDirectory()) throw refuse(entryName, "would be written through a symbolic link or a file")
  }
}

interface ZipItem {
  readonly name: string
  readonly kind: "directory" | "file" | "symlink"
  readonly mode: number
  linkTarget?: string
}

/**
 * Extracts a zip archive into `dest`. A first pass over the central directory checks every entry
 * (paths, link targets, total size) so that a refused archive writes nothing; the second pass
 * writes files without ever following a symbolic link (`O_NOFOLLOW`, and directories made one
 * level at a time).
 */
const extractZip = async (file: string, dest: string, maxBytes: number): Promise<void> => {
  const items: Array<ZipItem> = []
  let total = 0
  const first = await yauzl.openPromise(file, { lazyEntries: true, autoClose: false, validateEntrySizes: true }).catch((error) => {
    throw zipError(error)
  })
  try {
    for await (const entry of first.eachEntry()) {
      const name = entry.fileName
      const issue = pathProblem(name)
      if (issue !== undefined) throw refuse(name, issue)
      const mode = zipMode(entry)
      const kind = name.endsWith("/") || (mode & S_IFMT) === S_IFDIR
        ? "directory"
        : (mode & S_IFMT) === S_IFLNK
        ? "symlink"
        : "file"
      if (entry.isEncrypted()) throw refuse(name, "is encrypted")
      const item: ZipItem = { name, kind, mode: mode & 0o777 }
      if (kind === "symlink") {
        const target = await readAll(await first.openReadStreamPromise(entry), 4096)
        const linkIssue = linkProblem(dest, name, target, false)
        if (linkIssue !== undefined) throw refuse(name, linkIssue)
        item.linkTarget = target
      }
      total += entry.uncompressedSize
      if (total > maxBytes) throw tooLarge(maxBytes)
      items.push(item)
    }
  } catch (error) {
    throw error instanceof ArchiveError ? error : zipError(error)
  } finally {
    first.close()
  }

  const second = await yauzl.openPromise(file, { lazyEntries: true, autoClose: false, validateEntrySizes: true })
  try {
    let index = 0
    for await (const entry of second.eachEntry()) {
      const item = items[index++]!
      const relative = item.name.replace(/\/+$/, "")
      if (item.kind === "directory") {
        await makeDirectories(dest, relative, item.name)
        continue
      }
      await makeDirectories(dest, path.posix.dirname(relative), item.name)
      const target = path.join(dest, relative)
      if (item.kind === "symlink") {
        await fs.symlink(item.linkTarget!, target)
        continue
      }
      // O_NOFOLLOW: an existing symbolic link at the target is an error, never followed.
      const handle = await fs.open(
        target,
        constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC | constants.O_NOFOLLOW,
        item.mode === 0 ? 0o644 : item.mode
      ).catch((error) => {
        if ((error as NodeJS.ErrnoException).code === "ELOOP") {
          throw refuse(item.name, "would be written through a symbolic link")
        }
        throw error
      })
      try {
        await handle.writeFile(await second.openReadStreamPromise(entry))
      } finally {
        await handle.close()
      }
    }
  } catch (error) {
    throw error instanceof ArchiveError ? error : zipError(error)
  } finally {
    second.close()
  }
}

/** Extracts `file` (of `kind`) into the directory `dest`. Rejects with an `ArchiveError`. */
export const extract = async (kind: ArchiveKind, file: string, dest: string, maxBytes: number): Promise<void> => {
  try {
    await (kind === "tar" ? extractTar(file, dest, maxBytes) : extractZip(file, dest, maxBytes))
  } catch (error) {
    if (error instanceof ArchiveError) throw error
    const message = error instanceof Error ? error.message : String(error)
    throw new ArchiveError(`cannot extract the ${kind} archive: ${message}`)
  }
}
