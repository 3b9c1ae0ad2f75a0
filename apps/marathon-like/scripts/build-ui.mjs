// Builds the web UI: typechecks ui/ (so type errors fail `npm run build`), then bundles it with
// esbuild into ui-dist/ as index.html + fingerprinted, minified JS and CSS under ui-dist/assets/.
// The server (src/internal/ui/static.ts) serves ui-dist/ under /ui/.
import { execFileSync } from "node:child_process"
import { existsSync, mkdirSync, rmSync, writeFileSync } from "node:fs"
import { basename } from "node:path"
import { fileURLToPath } from "node:url"
import * as esbuild from "esbuild"

const appDir = fileURLToPath(new URL("../", import.meta.url))
const repoRoot = fileURLToPath(new URL("../../../", import.meta.url))
const outDir = fileURLToPath(new URL("../ui-dist/", import.meta.url))

// 1. Typecheck with the repo's TypeScript. esbuild strips types without checking them.
const tsc = `${repoRoot}node_modules/.bin/tsc`
if (!existsSync(tsc)) {
  console.error(`build-ui: ${tsc} not found; run npm ci at the repository root`)
  process.exit(1)
}
try {
  execFileSync(tsc, ["-p", "ui/tsconfig.json"], { cwd: appDir, stdio: "inherit" })
} catch {
  console.error("build-ui: the UI has type errors (tsc -p ui/tsconfig.json)")
  process.exit(1)
}

// 2. Bundle. The Mantine stylesheet is its own entry so the TypeScript sources never import CSS.
rmSync(outDir, { recursive: true, force: true })
mkdirSync(outDir, { recursive: true })
const result = await esbuild.build({
  absWorkingDir: appDir,
  entryPoints: { app: "ui/main.tsx", styles: "ui/styles.css" },
  bundle: true,
  minify: true,
  sourcemap: false,
  format: "esm",
  target: ["es2022", "chrome110", "firefox110", "safari16"],
  jsx: "automatic",
  outdir: "ui-dist/assets",
  entryNames: "[name]-[hash]",
  assetNames: "[name]-[hash]",
  define: { "process.env.NODE_ENV": '"production"' },
  legalComments: "none",
  metafile: true,
  logLevel: "warning"
})

const outputs = Object.keys(result.metafile.outputs)
const js = outputs.find((p) => /\/app-[^/]+\.js$/.test(p))
const css = outputs.find((p) => /\/styles-[^/]+\.css$/.test(p))
if (js === undefined || css === undefined) {
  console.error("build-ui: esbuild produced no app bundle or stylesheet", outputs)
  process.exit(1)
}

// 3. The HTML shell. Asset URLs are absolute so /ui, /ui/ and /ui/index.html all resolve them.
const favicon =
  "data:image/svg+xml," +
  encodeURIComponent(
    `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32"><rect width="32" height="32" rx="7" fill="#1c7ed6"/><path d="M7 22l5-12 4 8 3-5 6 9z" fill="#fff"/></svg>`
  )
writeFileSync(
  `${outDir}index.html`,
  `<!doctype html>
<html lang="en" data-mantine-color-scheme="light">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>marathon-like</title>
<link rel="icon" href="${favicon}">
<link rel="stylesheet" href="/ui/assets/${basename(css)}">
</head>
<body>
<div id="root"></div>
<script type="module" src="/ui/assets/${basename(js)}"></script>
</body>
</html>
`
)
const size = (p) => (result.metafile.outputs[p].bytes / 1024).toFixed(0)
console.log(`build-ui: ui-dist/assets/${basename(js)} (${size(js)} KiB), ${basename(css)} (${size(css)} KiB)`)
